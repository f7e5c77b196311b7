using System.Diagnostics;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Swap;

/// <summary>
/// A pulled cable, simulated: server and client in two network namespaces made by the test, joined by a veth pair whose
/// link is set down in the middle. TCP keepalive must notice the vanished peer and the area must be destroyed.
/// </summary>
public class NetworkCutTests
{
    private const long MiB = 1L << 20;

    private sealed class TwoHosts : IAsyncDisposable
    {
        private readonly string _suffix = Random.Shared.Next(0x1000, 0xffff).ToString("x", System.Globalization.CultureInfo.InvariantCulture);

        public string Server => "nss" + _suffix;
        public string Client => "nsc" + _suffix;
        public string ClientLink => "vc" + _suffix;
        public string Subnet { get; } = $"10.250.{Random.Shared.Next(1, 250)}";
        public string ServerAddress => Subnet + ".1";

        public async Task CreateAsync()
        {
            foreach (var command in new[]
            {
                $"netns add {Server}", $"netns add {Client}",
                $"link add vs{_suffix} netns {Server} type veth peer name {ClientLink} netns {Client}",
                $"-n {Server} addr add {Subnet}.1/24 dev vs{_suffix}", $"-n {Client} addr add {Subnet}.2/24 dev {ClientLink}",
                $"-n {Server} link set vs{_suffix} up", $"-n {Client} link set {ClientLink} up",
                $"-n {Server} link set lo up", $"-n {Client} link set lo up",
            })
            {
                var result = await ExternalTool.RunAsync("ip", command.Split(' '));
                Assert.True(result.ExitCode == 0, $"ip {command}: {result.All} (network namespaces need root)");
            }
        }

        public async ValueTask DisposeAsync()
        {
            await ExternalTool.RunAsync("ip", ["netns", "del", Server]);
            await ExternalTool.RunAsync("ip", ["netns", "del", Client]);
        }
    }

    [Fact]
    public async Task LinkDown_KeepaliveNotices_AndTheAreaIsDestroyed()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var hosts = new TwoHosts();
        await hosts.CreateAsync();
        var before = fs.Used;
        await using var daemon = DaemonProcess.StartWith(["ip", "netns", "exec", hosts.Server],
            "--listen", $"{hosts.ServerAddress}:9572", "--swap-dir", fs.Path,
            "--keepalive-time", "1s", "--keepalive-interval", "1s", "--keepalive-count", "2", "--tcp-user-timeout", "3s");
        await daemon.WaitForPortAsync();
        using var qemu = Process.Start(new ProcessStartInfo("ip", ["netns", "exec", hosts.Client, ExternalTool.Require("qemu-io"), "-f", "raw",
            "-c", "write -P 0x44 0 1M", "-c", "sleep 600000", $"nbd://{hosts.ServerAddress}:9572/swap:64M"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        try
        {
            Assert.True(await fs.WaitForUsedAsync(u => u - before >= 64 * MiB, TimeSpan.FromSeconds(20)), daemon.Stderr);
            Assert.True(await daemon.WaitForLogAsync("export 'swap:64M' attached"));
            var cut = Stopwatch.StartNew();
            await ExternalTool.RunOkAsync("ip", "-n", hosts.Client, "link", "set", hosts.ClientLink, "down");
            // Keepalive: 1 s idle + 2 probes 1 s apart; allow generous slack for a loaded CI machine.
            Assert.True(await fs.WaitForUsedAsync(u => u <= before, TimeSpan.FromSeconds(20)), $"area still there after the cut:\n{daemon.Stderr}");
            Assert.True(cut.Elapsed < TimeSpan.FromSeconds(20));
            Assert.True(await daemon.WaitForLogAsync("destroyed (connection lost"), daemon.Stderr);
        }
        finally
        {
            qemu.Kill(entireProcessTree: true);
        }
    }
}
