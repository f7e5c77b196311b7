using System.Buffers.Binary;
using System.Text;

namespace NetSwap.Protocol.Nbd;

/// <summary>
/// The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT (spec, "Metadata querying"): the export the
/// contexts are for, then the queries, each a string that starts with a namespace ("base:allocation").
/// </summary>
public readonly record struct NbdMetaContextRequest(string ExportName, string[] Queries)
{
    /// <summary>More queries than this in one option are NBD_REP_ERR_TOO_BIG: no server has that many contexts.</summary>
    public const int MaxQueries = 128;

    public int SerializedLength => 8 + Encoding.UTF8.GetByteCount(ExportName) + Queries.Sum(q => 4 + Encoding.UTF8.GetByteCount(q));

    public int Write(Span<byte> destination)
    {
        var position = WriteString(destination, ExportName);
        BinaryPrimitives.WriteUInt32BigEndian(destination[position..], (uint)Queries.Length);
        position += 4;
        foreach (var query in Queries)
        {
            position += WriteString(destination[position..], query);
        }
        return position;
    }

    private static int WriteString(Span<byte> destination, string value)
    {
        var length = Encoding.UTF8.GetBytes(value, destination[4..]);
        BinaryPrimitives.WriteUInt32BigEndian(destination, (uint)length);
        return 4 + length;
    }

    /// <summary>
    /// Parses the whole option data. False with <paramref name="tooBig"/> clear: syntactically invalid
    /// (NBD_REP_ERR_INVALID); with it set: more queries than <see cref="MaxQueries"/> (NBD_REP_ERR_TOO_BIG).
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> data, out NbdMetaContextRequest request, out string? problem, out bool tooBig)
    {
        request = default;
        tooBig = false;
        if (!TryReadString(ref data, "export name", out var name, out problem))
        {
            return false;
        }
        if (data.Length < 4)
        {
            problem = "no query count after the export name";
            return false;
        }
        var count = BinaryPrimitives.ReadUInt32BigEndian(data);
        data = data[4..];
        if (count > MaxQueries)
        {
            tooBig = true;
            problem = $"{count} queries; at most {MaxQueries} are taken";
            return false;
        }
        var queries = new string[count];
        for (var i = 0; i < count; i++)
        {
            if (!TryReadString(ref data, $"query {i + 1}", out queries[i], out problem))
            {
                return false;
            }
        }
        if (!data.IsEmpty)
        {
            problem = $"{data.Length} bytes after the last query";
            return false;
        }
        request = new NbdMetaContextRequest(name, queries);
        return true;
    }

    private static bool TryReadString(ref ReadOnlySpan<byte> data, string what, out string value, out string? problem)
    {
        value = "";
        if (data.Length < 4)
        {
            problem = $"{what}: no length";
            return false;
        }
        var length = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (length > NbdLimits.MaxStringLength || length > (uint)(data.Length - 4))
        {
            problem = $"{what}: length {length} does not fit the option data (or exceeds {NbdLimits.MaxStringLength} bytes)";
            return false;
        }
        if (!NbdStrings.TryDecode(data.Slice(4, (int)length), out value))
        {
            problem = $"{what} is not valid UTF-8 or contains NUL";
            return false;
        }
        data = data[(4 + (int)length)..];
        problem = null;
        return true;
    }
}

/// <summary>The metadata contexts this implementation knows: the one the spec defines.</summary>
public static class NbdMetaContexts
{
    /// <summary>"Allocated at all": holes and zeroes (spec, "base:allocation").</summary>
    public const string BaseAllocation = "base:allocation";

    /// <summary>
    /// The contexts a query names: base:allocation by its name; with <paramref name="listing"/> (NBD_OPT_LIST_META_CONTEXT)
    /// also by its namespace alone ("base:"), as the spec lets a listing do. Anything else names none (not an error).
    /// </summary>
    public static bool Matches(string query, bool listing) =>
        query == BaseAllocation || (listing && query == "base:");

    /// <summary>NBD_REP_META_CONTEXT: context ID(4) then the name.</summary>
    public static int ReplySize(string name) => 4 + Encoding.UTF8.GetByteCount(name);

    public static int WriteReply(Span<byte> destination, uint id, string name)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, id);
        return 4 + Encoding.UTF8.GetBytes(name, destination[4..]);
    }
}

/// <summary>The status flags of base:allocation (spec, "Metadata contexts").</summary>
[Flags]
public enum NbdAllocationFlags : uint
{
    None = 0,
    Hole = 1 << 0,
    Zero = 1 << 1,
}

/// <summary>One descriptor of an NBD_REPLY_TYPE_BLOCK_STATUS chunk: a nonzero length and its status flags.</summary>
public readonly record struct NbdBlockDescriptor(uint Length, NbdAllocationFlags Flags);

public static class NbdBlockStatusChunk
{
    public static int Size(int descriptors) => 4 + (8 * descriptors);

    /// <summary>The chunk's payload: the context ID, then each descriptor.</summary>
    public static int Write(Span<byte> destination, uint contextId, ReadOnlySpan<NbdBlockDescriptor> descriptors)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, contextId);
        var position = 4;
        foreach (var descriptor in descriptors)
        {
            BinaryPrimitives.WriteUInt32BigEndian(destination[position..], descriptor.Length);
            BinaryPrimitives.WriteUInt32BigEndian(destination[(position + 4)..], (uint)descriptor.Flags);
            position += 8;
        }
        return position;
    }

    /// <summary>Reads a chunk's payload; false when it is not 4 + a positive multiple of 8 bytes or a length is zero.</summary>
    public static bool TryRead(ReadOnlySpan<byte> payload, out uint contextId, out NbdBlockDescriptor[] descriptors)
    {
        contextId = 0;
        descriptors = [];
        if (payload.Length < 12 || (payload.Length - 4) % 8 != 0)
        {
            return false;
        }
        contextId = BinaryPrimitives.ReadUInt32BigEndian(payload);
        descriptors = new NbdBlockDescriptor[(payload.Length - 4) / 8];
        for (var i = 0; i < descriptors.Length; i++)
        {
            var at = 4 + (8 * i);
            descriptors[i] = new NbdBlockDescriptor(BinaryPrimitives.ReadUInt32BigEndian(payload[at..]), (NbdAllocationFlags)BinaryPrimitives.ReadUInt32BigEndian(payload[(at + 4)..]));
            if (descriptors[i].Length == 0)
            {
                return false;
            }
        }
        return true;
    }
}
