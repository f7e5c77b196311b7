using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Interop;

/// <summary>
/// base:allocation as real clients use it: `nbdinfo --map`, `qemu-img map`, libnbd's block_status (nbdsh script), and
/// nbdcopy, which copies a sparse export without reading its holes; a swap area reports its untouched space as holes
/// too (a sparse area).
/// </summary>
public class BlockStatusClientTests
{
    private const long Size = 64L << 20;

    /// <summary>Data at 4 MiB (1 MiB), 32 MiB (64 KiB) and the last 4 KiB; the rest is holes.</summary>
    private static readonly (long Start, int Length)[] Data = [(4L << 20, 1 << 20), (32L << 20, 64 << 10), (Size - 4096, 4096)];

    private static async Task<ServerHarness> SparseAsync()
    {
        var server = await ServerHarness.StartAsync(("disk", Size, false));
        using (var file = File.OpenHandle(server.PathOf("disk"), FileMode.Open, FileAccess.Write))
        {
            foreach (var (start, length) in Data)
            {
                var bytes = new byte[length];
                new Random((int)(start >> 12)).NextBytes(bytes);
                RandomAccess.Write(file, bytes, start);
            }
        }
        return server;
    }

    /// <summary>The map as (offset, length, data?) with neighbours of the same kind merged.</summary>
    private static List<(long Offset, long Length, bool Data)> Merge(IEnumerable<(long Offset, long Length, bool Data)> extents)
    {
        var merged = new List<(long Offset, long Length, bool Data)>();
        foreach (var e in extents)
        {
            if (merged.Count > 0 && merged[^1].Data == e.Data && merged[^1].Offset + merged[^1].Length == e.Offset)
            {
                merged[^1] = (merged[^1].Offset, merged[^1].Length + e.Length, e.Data);
            }
            else
            {
                merged.Add(e);
            }
        }
        return merged;
    }

    private static readonly List<(long, long, bool)> Expected =
    [
        (0, 4L << 20, false), (4L << 20, 1L << 20, true), (5L << 20, 27L << 20, false), (32L << 20, 64L << 10, true),
        ((32L << 20) + (64 << 10), Size - 4096 - (32L << 20) - (64 << 10), false), (Size - 4096, 4096, true),
    ];

    [Fact]
    public async Task NbdinfoMap_ShowsTheHolesAndTheData()
    {
        await using var server = await SparseAsync();
        using var map = JsonDocument.Parse(await ExternalTool.RunOkAsync("nbdinfo", "--map", "--json", server.Uri("disk")));
        var extents = map.RootElement.EnumerateArray().Select(e =>
            (e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), (e.GetProperty("type").GetInt32() & 1) == 0)).ToList();
        Assert.Equal(Expected, Merge(extents));
        // The holes read as zero (type 3: hole and zero), the data as neither.
        Assert.All(map.RootElement.EnumerateArray(), e => Assert.Contains(e.GetProperty("type").GetInt32(), new[] { 0, 3 }));
    }

    [Fact]
    public async Task QemuImgMap_ShowsTheHolesAndTheData()
    {
        await using var server = await SparseAsync();
        using var map = JsonDocument.Parse(await ExternalTool.RunOkAsync("qemu-img", "map", "--output=json", "-f", "raw", server.Uri("disk")));
        var extents = map.RootElement.EnumerateArray().Select(e =>
            (e.GetProperty("start").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("data").GetBoolean())).ToList();
        Assert.Equal(Expected, Merge(extents));
        Assert.All(map.RootElement.EnumerateArray(), e => Assert.Equal(!e.GetProperty("data").GetBoolean(), e.GetProperty("zero").GetBoolean()));
    }

    [Fact]
    public async Task Nbdsh_MetaContextsAndBlockStatus()
    {
        await using var server = await SparseAsync();
        var data = string.Join(',', Data.Select(d => string.Create(CultureInfo.InvariantCulture, $"{d.Start}:{d.Length}")));
        var result = await ExternalTool.RunAsync("/usr/bin/python3",
            [Path.Combine(AppContext.BaseDirectory, "scripts", "blockstatus.py"), $"nbd://127.0.0.1:{server.Port}", "disk", Size.ToString(CultureInfo.InvariantCulture), data],
            environment: new Dictionary<string, string> { ["PATH"] = "/usr/bin:/bin:/usr/sbin:/sbin" });
        Assert.True(result.ExitCode == 0, result.All);
        Assert.Contains("ok: NBD_CMD_BLOCK_STATUS extents", result.Stdout);
        Assert.Contains("ok: no context, EINVAL", result.Stdout);
    }

    [Fact]
    public async Task Nbdcopy_CopiesASparseExport_WithoutReadingItsHoles()
    {
        await using var server = await SparseAsync();
        var copy = Path.Combine(server.Directory, "copy.img");
        await ExternalTool.RunOkAsync("nbdcopy", server.Uri("disk"), copy);
        Assert.Equal(Convert.ToHexString(SHA256.HashData(await File.ReadAllBytesAsync(server.PathOf("disk")))),
            Convert.ToHexString(SHA256.HashData(await File.ReadAllBytesAsync(copy))));
        // The server read only the data (1 MiB + 68 KiB), not the 64 MiB: the holes were known from block status.
        Assert.True(await server.Log.WaitForAsync(" closed after "), string.Join('\n', server.Log.Lines));
        var closed = server.Log.Lines.Where(l => l.Contains(" closed after ", StringComparison.Ordinal)).ToList();
        var read = closed.Sum(l => long.Parse(System.Text.RegularExpressions.Regex.Match(l, @"read (\d+) B").Groups[1].Value, CultureInfo.InvariantCulture));
        Assert.InRange(read, (1L << 20) + (68 << 10), 4L << 20);
    }

    [Fact]
    public async Task SwapArea_ReportsItsUntouchedSpaceAsHoles()
    {
        await using var fs = await TmpfsMount.CreateAsync(256L << 20);
        await using var server = ServerHarness.StartSwap(fs.Path, swap => swap.Allocation = NetSwap.Server.Exports.Swap.SwapAllocation.Sparse);
        // One connection: write 1 MiB at 8 MiB, then map the whole area (the swap header at offset 0 is data too).
        var script = "h.pwrite(b'\\x5a' * 1048576, 8388608); " +
            "m = []; h.block_status(h.get_size(), 0, lambda c, o, e, err: m.extend(zip(e[0::2], e[1::2])) or 0); print(m)";
        var result = await ExternalTool.RunAsync("nbdsh", ["--base-allocation", "-u", $"nbd://127.0.0.1:{server.Port}/swap:32M", "-c", script],
            environment: new Dictionary<string, string> { ["PATH"] = "/usr/bin:/bin:/usr/sbin:/sbin" });
        Assert.True(result.ExitCode == 0, result.All);
        var extents = new List<(long Offset, long Length, int Flags)>();
        foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(result.Stdout, @"\((\d+), (\d+)\)"))
        {
            var offset = extents.Count == 0 ? 0 : extents[^1].Offset + extents[^1].Length;
            extents.Add((offset, long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture)));
        }
        Assert.Equal(32L << 20, extents.Sum(e => e.Length));
        // The megabyte written is data; the untouched second half of the area a hole that reads as zero.
        bool Covered(long start, long end, Func<int, bool> kind) => extents.Where(e => e.Offset < end && e.Offset + e.Length > start).All(e => kind(e.Flags));
        Assert.True(Covered(8L << 20, 9L << 20, f => f == 0), result.Stdout);
        Assert.True(Covered(16L << 20, 32L << 20, f => f == 3), result.Stdout);
    }
}
