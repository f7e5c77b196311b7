using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using NetSwap.Protocol.Nbd;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Swap;

/// <summary>
/// A pulled cable, simulated: server and client in two network namespaces made by the test, joined by a veth pair whose
/// link is set down in the middle. TCP keepalive must notice the vanished peer and the area must be destroyed.
/// </summary>
public class NetworkCutTests
{
    private const long MiB = 1L << 20;

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

    [Fact]
    public async Task LinkDown_WhileWritesWaitOnUnreadReplies_TheConnectionAndItsAreaAreReleased()
    {
        // Issue 14, item 2: a client whose replies pile up unread (the server stopped reading its WRITEs), then the
        // link goes. It was never released (60 s and more) while an idle client behind the same cut went in 8.5 s.
        // The replies the server cannot get acknowledged end it after --tcp-user-timeout.
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var hosts = new TwoHosts();
        await hosts.CreateAsync();
        var before = fs.Used;
        await using var daemon = DaemonProcess.StartWith(["ip", "netns", "exec", hosts.Server],
            "--listen", $"{hosts.ServerAddress}:9572", "--swap-dir", fs.Path, "--tcp-user-timeout", "3s");
        await daemon.WaitForPortAsync();
        using var socket = hosts.ClientSocket(receiveBuffer: 4096);
        await socket.ConnectAsync(IPAddress.Parse(hosts.ServerAddress), 9572);
        await using (var stream = new NetworkStream(socket, ownsSocket: false))
        {
            var client = new TestNbdClient(stream);
            await client.StartAsync();
            await client.GoAsync("swap:64M", structured: false);
        }
        Assert.True(await fs.WaitForUsedAsync(u => u - before >= 64 * MiB, TimeSpan.FromSeconds(20)), daemon.Stderr);
        var sent = await RawFlood.WithoutReadingAsync(socket, NbdCommand.Write);
        Assert.True(sent > 64, $"only {sent} requests went out before the server stopped taking them");

        var cut = Stopwatch.StartNew();
        await ExternalTool.RunOkAsync("ip", "-n", hosts.Client, "link", "set", hosts.ClientLink, "down");
        // 3 s of unacknowledged replies; generous slack for a loaded CI machine, far below the old never.
        Assert.True(await fs.WaitForUsedAsync(u => u <= before, TimeSpan.FromSeconds(20)), $"area still there {cut.Elapsed.TotalSeconds:F0} s after the cut:\n{daemon.Stderr}");
        Assert.True(await daemon.WaitForLogAsync("destroyed (connection lost"), daemon.Stderr);
        Assert.Empty((await daemon.StatusAsync()).Clients);
    }
}
