using System.Buffers.Binary;
using System.Text;

namespace NetSwap.Protocol.Swap;

/// <summary>
/// The Linux swap area header (mkswap's SWAPSPACE2, version 1) in the first page of an area, so a client can swapon
/// without running mkswap, as LTSP's nbdswapd offered. Layout of the first 4 KiB page (include/linux/swap.h):
/// <code>
/// 0       1024     1028       1032         1036    1052     1068             4086         4096
/// +-------+--------+----------+------------+-------+--------+--- ... -------+------------+
/// | boot  |version |last_page |nr_badpages | uuid  | label  | padding       |"SWAPSPACE2"|
/// +-------+--------+----------+------------+-------+--------+--- ... -------+------------+
/// </code>
/// Integers are little-endian; the kernel byte-swaps a header whose version reads as 0x01000000, so big-endian
/// clients accept it too.
/// </summary>
public static class SwapHeader
{
    public const int PageSize = 4096;
    public const string Magic = "SWAPSPACE2";
    /// <summary>mkswap refuses areas of fewer than 10 pages.</summary>
    public const long MinimumSize = 10 * PageSize;

    public static void Write(Span<byte> page, long areaSize, Guid uuid, string label)
    {
        if (page.Length < PageSize)
        {
            throw new ArgumentException("the header needs one 4096-byte page", nameof(page));
        }
        if (areaSize < MinimumSize)
        {
            throw new ArgumentOutOfRangeException(nameof(areaSize), $"a swap area needs at least {MinimumSize} bytes");
        }
        page[..PageSize].Clear();
        var lastPage = (areaSize / PageSize) - 1;
        BinaryPrimitives.WriteUInt32LittleEndian(page[1024..], 1);
        BinaryPrimitives.WriteUInt32LittleEndian(page[1028..], (uint)Math.Min(lastPage, uint.MaxValue));
        BinaryPrimitives.WriteUInt32LittleEndian(page[1032..], 0);
        uuid.TryWriteBytes(page.Slice(1036, 16), bigEndian: true, out _);
        Encoding.ASCII.GetBytes(label.Length > 15 ? label[..15] : label, page.Slice(1052, 16));
        Encoding.ASCII.GetBytes(Magic, page[(PageSize - 10)..]);
    }

    public static bool TryRead(ReadOnlySpan<byte> page, out long lastPage, out Guid uuid, out string label)
    {
        lastPage = 0;
        uuid = Guid.Empty;
        label = "";
        if (page.Length < PageSize || !page.Slice(PageSize - 10, 10).SequenceEqual(Encoding.ASCII.GetBytes(Magic))
            || BinaryPrimitives.ReadUInt32LittleEndian(page[1024..]) != 1)
        {
            return false;
        }
        lastPage = BinaryPrimitives.ReadUInt32LittleEndian(page[1028..]);
        uuid = new Guid(page.Slice(1036, 16), bigEndian: true);
        var raw = page.Slice(1052, 16);
        var end = raw.IndexOf((byte)0);
        label = Encoding.ASCII.GetString(end < 0 ? raw : raw[..end]);
        return true;
    }
}
