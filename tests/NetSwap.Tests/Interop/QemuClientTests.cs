using System.Security.Cryptography;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Interop;

/// <summary>QEMU's NBD client (qemu-io, qemu-img, qemu-nbd from qemu-utils) against the in-process server.</summary>
public class QemuClientTests
{
    [Fact]
    public async Task QemuIo_PatternWritesAndVerifies_AtOddOffsets_WithFuaAndWriteZeroes()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 64L * 1024 * 1024, false));
        string[] commands =
        [
            "write -P 0x5a 1 4095", "read -P 0x5a 1 4095",
            "write -f -P 0x33 65537 131071", "read -P 0x33 65537 131071",
            "write -P 0x77 1048575 3000001", "read -P 0x77 1048575 3000001",
            "write -z 1048575 70000", "read -P 0 1048575 70000", "read -P 0x77 1118575 10",
            "write -z -u 2097152 1048576", "read -P 0 2097152 1048576",
            "write -z -f 3145728 4096", "read -P 0 3145728 4096",
            "aio_write -P 0x11 8388608 65536", "aio_write -P 0x22 8454144 65536", "aio_flush",
            "read -P 0x11 8388608 65536", "read -P 0x22 8454144 65536",
            "discard 16777216 1048576", "flush",
            "write -P 0xee 67108863 1", "read -P 0xee 67108863 1",
        ];
        var args = new List<string> { "-f", "raw" };
        foreach (var command in commands)
        {
            args.Add("-c");
            args.Add(command);
        }
        args.Add(server.Uri("disk"));
        var result = await ExternalTool.RunAsync("qemu-io", args);
        Assert.True(result.ExitCode == 0, result.All);
        Assert.DoesNotContain("fail", result.All, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("error", result.All, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("read 1/1 bytes at offset 67108863", result.Stdout);
        // A wrong pattern must be detected: proves the checks above can fail.
        var wrong = await ExternalTool.RunAsync("qemu-io", ["-f", "raw", "-c", "read -P 0x5b 1 4095", server.Uri("disk")]);
        Assert.Contains("Pattern verification failed", wrong.All);
    }

    [Fact]
    public async Task QemuImg_ConvertInAndOut_RoundTripsAndCompares()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 24L * 1024 * 1024, false));
        var source = Path.Combine(server.Directory, "source.raw");
        var back = Path.Combine(server.Directory, "back.raw");
        var data = new byte[24 * 1024 * 1024];
        new Random(42).NextBytes(data.AsSpan(0, 10 * 1024 * 1024));   // data, then a zero tail
        await File.WriteAllBytesAsync(source, data);
        await ExternalTool.RunOkAsync("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", source, server.Uri("disk"));
        await ExternalTool.RunOkAsync("qemu-img", "convert", "-f", "raw", "-O", "raw", server.Uri("disk"), back);
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(await File.ReadAllBytesAsync(back)));
        var compare = await ExternalTool.RunAsync("qemu-img", ["compare", "-f", "raw", "-F", "raw", source, server.Uri("disk")]);
        Assert.True(compare.ExitCode == 0, compare.All);
        Assert.Contains("Images are identical", compare.Stdout);
        var info = await ExternalTool.RunOkAsync("qemu-img", "info", "--output=json", server.Uri("disk"));
        Assert.Contains("\"virtual-size\": 25165824", info);
    }

    [Fact]
    public async Task QemuNbd_List_ShowsExportsSizesAndFlags()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1024 * 1024, false), ("ro", 2 * 1024 * 1024, true));
        var output = await ExternalTool.RunOkAsync("qemu-nbd", "--list", "-b", "127.0.0.1", "-p", server.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Contains("exports available: 2", output);
        Assert.Contains("export: 'disk'", output);
        Assert.Contains("size:  1048576", output);
        Assert.Contains("flags: 0xded ( flush fua trim zeroes df multi cache fast-zero )", output);
        Assert.Contains("export: 'ro'", output);
        Assert.Contains("flags: 0x587 ( readonly flush df multi cache )", output);
        Assert.Contains("max block: 33554432", output);
    }
}
