using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Interop;

/// <summary>libnbd's tools (nbdinfo, nbdsh/python3-libnbd, nbdcopy from libnbd-bin) against the in-process server.</summary>
public class LibnbdClientTests
{
    private const long Size = 64L * 1024 * 1024;
    private static readonly Dictionary<string, string> SystemPython = new() { ["PATH"] = "/usr/bin:/bin:/usr/sbin:/sbin" };

    private static string Script(string name) => Path.Combine(AppContext.BaseDirectory, "scripts", name);

    private static async Task RunScriptAsync(string name, string? query, params string[] args)
    {
        var environment = new Dictionary<string, string>(SystemPython) { ["NBD_URI_QUERY"] = query ?? "" };
        var result = await ExternalTool.RunAsync("/usr/bin/python3", [Script(name), .. args], environment: environment);
        Assert.True(result.ExitCode == 0, $"{name} failed:\n{result.All}");
        Assert.Contains("ok:", result.Stdout);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Nbdinfo_Json_ReportsTheConfiguredSizeAndFlags(bool tls)
    {
        var (server, uri, query) = await StartAsync(tls, ("disk", Size, false), ("ro", 3 * 1024 * 1024, true));
        await using var _ = server;
        using var disk = JsonDocument.Parse(await ExternalTool.RunOkAsync("nbdinfo", "--json", $"{uri}/disk{query}"));
        Assert.Equal(tls, disk.RootElement.GetProperty("TLS").GetBoolean());
        Assert.True(disk.RootElement.GetProperty("structured").GetBoolean());
        var e = disk.RootElement.GetProperty("exports")[0];
        Assert.Equal("disk", e.GetProperty("export-name").GetString());
        Assert.Equal(Size, e.GetProperty("export-size").GetInt64());
        foreach (var flag in new[] { "can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_df", "can_multi_conn", "can_cache" })
        {
            Assert.True(e.GetProperty(flag).GetBoolean(), flag);
        }
        Assert.False(e.GetProperty("is_read_only").GetBoolean());
        Assert.Equal(1, e.GetProperty("block_size_minimum").GetInt32());
        Assert.Equal(4096, e.GetProperty("block_size_preferred").GetInt32());
        Assert.Equal(32 * 1024 * 1024, e.GetProperty("block_size_maximum").GetInt32());

        using var ro = JsonDocument.Parse(await ExternalTool.RunOkAsync("nbdinfo", "--json", $"{uri}/ro{query}"));
        var r = ro.RootElement.GetProperty("exports")[0];
        Assert.Equal(3 * 1024 * 1024, r.GetProperty("export-size").GetInt64());
        Assert.True(r.GetProperty("is_read_only").GetBoolean());
        Assert.False(r.GetProperty("can_trim").GetBoolean());
        Assert.False(r.GetProperty("can_zero").GetBoolean());
    }

    [Fact]
    public async Task Nbdinfo_List_ShowsEveryExport()
    {
        await using var server = await ServerHarness.StartAsync(("disk", Size, false), ("described", 1024 * 1024, true));
        using var list = JsonDocument.Parse(await ExternalTool.RunOkAsync("nbdinfo", "--list", "--json", $"nbd://127.0.0.1:{server.Port}"));
        var exports = list.RootElement.GetProperty("exports").EnumerateArray()
            .ToDictionary(x => x.GetProperty("export-name").GetString()!, x => x);
        Assert.Equal(["described", "disk"], exports.Keys.Order());
        Assert.Equal(Size, exports["disk"].GetProperty("export-size").GetInt64());
        Assert.Equal("a described export", exports["described"].GetProperty("description").GetString());
        Assert.True(exports["described"].GetProperty("is_read_only").GetBoolean());
    }

    /// <summary>Plain, or (tls) with TLS required and client certificates verified: the same suite must pass both ways.</summary>
    private static async Task<(ServerHarness Server, string Base, string? Query)> StartAsync(bool tls, params (string, long, bool)[] exports)
    {
        var server = await ServerHarness.StartAsync(exports);
        if (!tls)
        {
            return (server, $"nbd://127.0.0.1:{server.Port}", null);
        }
        var certs = await TestCertificates.GetAsync();
        server.Context.Tls = certs.Configuration(NetSwap.Server.Tls.TlsMode.Require);
        return (server, $"nbds://127.0.0.1:{server.Port}", $"?tls-certificates={certs.Client("pc01")}");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Nbdsh_EveryOption(bool tls)
    {
        var (server, uri, query) = await StartAsync(tls, ("disk", Size, false), ("ro", Size, true));
        await using var _ = server;
        await RunScriptAsync("options.py", query, uri, Size.ToString(CultureInfo.InvariantCulture));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Nbdsh_EveryCommandAndErrorCase(bool tls)
    {
        var (server, uri, query) = await StartAsync(tls, ("disk", Size, false), ("ro", Size, true));
        await using var _ = server;
        await RunScriptAsync("commands.py", query, uri, Size.ToString(CultureInfo.InvariantCulture));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Nbdsh_PipelinedFromFourConnections_OnAMultiConnExport(bool tls)
    {
        var (server, uri, query) = await StartAsync(tls, ("disk", Size, false));
        await using var _ = server;
        await RunScriptAsync("pipelined.py", null, $"{uri}/disk{query}");
    }

    [Fact]
    public async Task Nbdcopy_OverTls_InAndOut_WithEqualChecksums()
    {
        var (server, uri, query) = await StartAsync(true, ("big", 256L << 20, false));
        await using var _ = server;
        var source = Path.Combine(server.Directory, "source.bin");
        var back = Path.Combine(server.Directory, "back.bin");
        var data = new byte[256 << 20];
        new Random(5).NextBytes(data.AsSpan(0, 200 << 20));
        await File.WriteAllBytesAsync(source, data);
        await ExternalTool.RunOkAsync("nbdcopy", source, $"{uri}/big{query}");
        await ExternalTool.RunOkAsync("nbdcopy", $"{uri}/big{query}", back);
        Assert.Equal(await HashAsync(source), await HashAsync(back));
    }

    [Fact]
    public async Task Nbdsh_CommandLine_Works()
    {
        await using var server = await ServerHarness.StartAsync(("disk", Size, false));
        var result = await ExternalTool.RunAsync("nbdsh",
            ["-u", server.Uri("disk"), "-c", "h.pwrite(b'netswap', 4096); print(h.pread(7, 4096).decode(), h.get_size())"],
            environment: SystemPython);
        Assert.True(result.ExitCode == 0, result.All);
        Assert.Equal($"netswap {Size}", result.Stdout.Trim());
    }

    [Fact]
    public async Task Nbdcopy_OneGibibyte_InAndOut_WithEqualChecksums()
    {
        const long gib = 1024L * 1024 * 1024;
        await using var server = await ServerHarness.StartAsync(("big", gib, false));
        var source = Path.Combine(server.Directory, "source.bin");
        var back = Path.Combine(server.Directory, "back.bin");
        await using (var file = File.Create(source))
        {
            // Random data with stretches of zeros, so both data and zero handling are exercised.
            var block = new byte[4 * 1024 * 1024];
            var random = new Random(1);
            for (var i = 0; i < gib / block.Length; i++)
            {
                if (i % 8 == 7)
                {
                    Array.Clear(block);
                }
                else
                {
                    random.NextBytes(block);
                }
                await file.WriteAsync(block);
            }
        }
        await ExternalTool.RunOkAsync("nbdcopy", source, server.Uri("big"));
        await ExternalTool.RunOkAsync("nbdcopy", server.Uri("big"), back);
        Assert.Equal(await HashAsync(source), await HashAsync(back));
        File.Delete(source);
        File.Delete(back);
    }

    private static async Task<string> HashAsync(string path)
    {
        await using var stream = File.OpenRead(path);
        return Convert.ToHexString(await SHA256.HashDataAsync(stream));
    }
}
