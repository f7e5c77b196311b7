using System.Text.Json;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Client;

/// <summary>
/// The client's --json outputs (System.Text.Json, source-generated): valid JSON that a script can take apart, with
/// the same snake_case names as before, and strings that need escaping (quotes, a tab, a backslash) escaped.
/// </summary>
public class ClientJsonTests
{
    private static readonly string Client = Path.Combine(AppContext.BaseDirectory, "netswap.dll");

    [Fact]
    public async Task ExportsDiscoverAndStatus_WriteJsonThatParses()
    {
        var dir = Scratch.Directory("netswap-json-");
        var image = Path.Combine(dir, "disk.img");
        await File.WriteAllBytesAsync(image, new byte[1 << 20]);
        const string description = "lab \"A\"\twith a tab and a \\ backslash";
        var config = Path.Combine(dir, "netswapd.toml");
        await File.WriteAllTextAsync(config, $"[exports.odd]\npath = \"{image}\"\nreadonly = true\ndescription = {JsonSerializer.Serialize(description)}\n");
        var udp = Ports.Unused();
        await using var daemon = DaemonProcess.Start("--config", config, "--listen", "127.0.0.1:0", "--swap-dir", Scratch.Directory("netswap-json-swap-"), "--discovery", "on", "--discovery-port", udp.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var port = await daemon.WaitForPortAsync();

        var exports = await ExternalTool.RunAsync("dotnet", [Client, "exports", $"127.0.0.1:{port}", "--json"]);
        Assert.True(exports.ExitCode == 0, exports.All);
        var list = JsonDocument.Parse(exports.Stdout).RootElement;
        var odd = list.EnumerateArray().Single(e => e.GetProperty("name").GetString() == "odd");
        Assert.Equal(1 << 20, odd.GetProperty("size").GetInt64());
        Assert.True(odd.GetProperty("read_only").GetBoolean());
        Assert.True(odd.GetProperty("multi_conn").GetBoolean());   // read-only: any number of connections see the same data
        Assert.Equal(description, odd.GetProperty("description").GetString());

        var discover = await ExternalTool.RunAsync("dotnet", [Client, "discover", "--address", "127.0.0.1", "--port", udp.ToString(System.Globalization.CultureInfo.InvariantCulture), "--timeout", "3s", "--json"]);
        Assert.True(discover.ExitCode == 0, discover.All + daemon.Stderr);
        var server = Assert.Single(JsonDocument.Parse(discover.Stdout).RootElement.EnumerateArray());
        Assert.Equal("127.0.0.1", server.GetProperty("address").GetString());
        Assert.Equal(port, server.GetProperty("port").GetInt32());
        Assert.True(server.GetProperty("admits").GetBoolean());
        Assert.False(server.GetProperty("tls_required").GetBoolean());
        foreach (var name in new[] { "free_capacity", "max_size", "clients", "load_per_mille", "tls_offered", "name", "version", "rtt_ms" })
        {
            Assert.True(server.TryGetProperty(name, out _), $"no {name} in {discover.Stdout}");
        }

        // Nothing attached on this host: an empty array, still JSON.
        var status = await ExternalTool.RunAsync("dotnet", [Client, "status", "--json"]);
        Assert.True(status.ExitCode == 0, status.All);
        Assert.Equal(JsonValueKind.Array, JsonDocument.Parse(status.Stdout).RootElement.ValueKind);
    }
}
