using NetSwap.Tests.Support;

namespace NetSwap.Tests.Access;

/// <summary>
/// The embedded default on a real network: netswapd in its own network namespace admits the subnets of its own
/// interfaces (IPv4 and IPv6) and refuses a client from anywhere else, with no rule configured.
/// </summary>
public class NamespaceAccessTests
{
    private static string Script => Path.Combine(AppContext.BaseDirectory, "scripts", "go.py");

    private static async Task<string> GoFromClientAsync(TwoHosts hosts, string source, string server, string export)
    {
        var result = await ExternalTool.RunAsync("ip", ["netns", "exec", hosts.Client, "/usr/bin/python3", Script, source, server, "9572", export]);
        Assert.True(result.ExitCode == 0, result.All);
        return result.Stdout.Trim();
    }

    [Fact]
    public async Task DefaultRules_AdmitTheLocalSubnets_RefuseOthers()
    {
        await using var fs = await TmpfsMount.CreateAsync(128L << 20);
        await using var hosts = new TwoHosts();
        await hosts.CreateAsync();
        await using var daemon = DaemonProcess.StartWith(["ip", "netns", "exec", hosts.Server],
            "--listen", $"{hosts.ServerAddress}:9572", "--listen", $"[{hosts.ServerAddress6}]:9572", "--swap-dir", fs.Path, "--swap-size", "8M");
        await daemon.WaitForPortAsync();
        Assert.True(await daemon.WaitForLogAsync($"allow {hosts.Subnet}.0/24 (default: local interface)"), daemon.Stderr);
        Assert.Equal("ack", await GoFromClientAsync(hosts, hosts.ClientAddress, hosts.ServerAddress, "swap"));
        Assert.Equal("ack", await GoFromClientAsync(hosts, hosts.ClientAddress6, hosts.ServerAddress6, "swap"));
        Assert.Equal("policy", await GoFromClientAsync(hosts, hosts.ForeignAddress, hosts.ServerAddress, "swap"));
        // The client has its answer before the log line need have reached stderr: wait for the line itself.
        Assert.True(await daemon.WaitForLogAsync($"conn 3 from {hosts.ForeignAddress}:"), daemon.Stderr);
        Assert.True(await daemon.WaitForLogAsync("refused by the access rules: no allow rule matches"), daemon.Stderr);
        Assert.Empty(Directory.EnumerateFileSystemEntries(fs.Path));
    }
}

/// <summary>The valid-client list by MAC address: matched through the server's neighbour table for on-link clients.</summary>
public class MacClientListTests
{
    private static string Script => Path.Combine(AppContext.BaseDirectory, "scripts", "go.py");

    [Fact]
    public async Task ListedMac_IsAdmitted_AnotherMac_IsNot_AndEditsApplyWithoutRestart()
    {
        await using var fs = await TmpfsMount.CreateAsync(128L << 20);
        await using var hosts = new TwoHosts();
        await hosts.CreateAsync();
        var link = await ExternalTool.RunOkAsync("ip", "-n", hosts.Client, "-o", "link", "show", hosts.ClientLink);
        var mac = link.Split(' ', StringSplitOptions.RemoveEmptyEntries).SkipWhile(w => w != "link/ether").Skip(1).First();
        var list = Path.Combine(fs.Path, "clients");
        await File.WriteAllTextAsync(list, "# by MAC\n02:00:00:00:00:01\n");
        await using var daemon = DaemonProcess.StartWith(["ip", "netns", "exec", hosts.Server],
            "--listen", $"{hosts.ServerAddress}:9572", "--swap-dir", Path.Combine(fs.Path, "swap"), "--swap-size", "8M", "--clients", list);
        await daemon.WaitForPortAsync();

        async Task<string> GoAsync()
        {
            var result = await ExternalTool.RunAsync("ip", ["netns", "exec", hosts.Client, "/usr/bin/python3", Script, hosts.ClientAddress, hosts.ServerAddress, "9572", "swap"]);
            Assert.True(result.ExitCode == 0, result.All);
            return result.Stdout.Trim();
        }

        Assert.Equal("policy", await GoAsync());
        Assert.True(await daemon.WaitForLogAsync("not on the client list"), daemon.Stderr);
        await File.WriteAllTextAsync(list, $"# by MAC\n02:00:00:00:00:01\n{mac}\n");
        File.SetLastWriteTimeUtc(list, DateTime.UtcNow.AddSeconds(5));
        Assert.Equal("ack", await GoAsync());
    }
}
