using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using NetSwap.Protocol.Nbd;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Swap;

/// <summary>
/// Swap on demand with netswapd as a real process: SIGKILL of the daemon with 50 clients, leftovers, the launch modes
/// (standalone, inetd, systemd socket activation, oldstyle), the status command, and real clients killed or cut off.
/// </summary>
public class SwapDaemonTests
{
    private const long MiB = 1L << 20;

    private static async Task<TestNbdClient> ConnectAsync(int port, string export, string host = "127.0.0.1")
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Parse(host), port);
        var client = new TestNbdClient(new NetworkStream(socket, ownsSocket: true));
        await client.StartAsync();
        await client.GoAsync(export);
        return client;
    }

    [Fact]
    public async Task DaemonKilledWithSigkill_With50Clients_LeavesNothingBehind()
    {
        await using var fs = await TmpfsMount.CreateAsync(1024 * MiB);
        var before = fs.Used;
        await using var daemon = DaemonProcess.Start("--listen", "127.0.0.1:0", "--swap-dir", fs.Path, "--swap-size", "8M",
            "--max-clients-per-address", "0", "--connection-rate", "0");
        var port = await daemon.WaitForPortAsync();
        var clients = await Task.WhenAll(Enumerable.Range(0, 50).Select(i => ConnectAsync(port, $"swap/c{i}")));
        await Task.WhenAll(clients.Select(c => c.RequestAsync(NbdCommand.Write, 4096, 65536, payload: new byte[65536])));
        Assert.True(fs.Used - before >= 50 * 8 * MiB);
        daemon.Signal(9);
        await daemon.WaitForExitAsync(TimeSpan.FromSeconds(10));
        Assert.True(await fs.WaitForUsedAsync(u => u <= before, TimeSpan.FromSeconds(5)), $"{fs.Used - before} B still used after SIGKILL");
        Assert.Empty(Directory.EnumerateFileSystemEntries(fs.Path));
        foreach (var c in clients)
        {
            await c.DisposeAsync();
        }
    }

    [Fact]
    public async Task LeftoversOfAnEarlierRun_AreRemovedAndLogged()
    {
        await using var fs = await TmpfsMount.CreateAsync(64 * MiB);
        var swapDir = Path.Combine(fs.Path, "swap");
        // The directory as netswapd makes it (it no longer changes the mode of one it did not make).
        Directory.CreateDirectory(swapDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        // A named fallback area of a daemon that died between create and unlink: netswapd's own name pattern.
        const string leftover = "area-DEADBEEF0123456789ABCDEF";
        await File.WriteAllBytesAsync(Path.Combine(swapDir, leftover), new byte[12345]);
        await using var daemon = DaemonProcess.Start("--listen", "127.0.0.1:0", "--swap-dir", swapDir);
        await daemon.WaitForPortAsync();
        Assert.Contains($"removed {leftover} (12345 B)", daemon.Stderr);
        Assert.Empty(Directory.EnumerateFileSystemEntries(swapDir));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(swapDir));
    }

    [Fact]
    public async Task ClientKilledWithSigkill_GivesTheSpaceBack()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        var before = fs.Used;
        await using var daemon = DaemonProcess.Start("--listen", "127.0.0.1:0", "--swap-dir", fs.Path);
        var port = await daemon.WaitForPortAsync();
        using var qemu = Process.Start(new ProcessStartInfo(ExternalTool.Require("qemu-io"), ["-f", "raw", "-c", "write -P 0x33 0 1M", "-c", "sleep 600000", $"nbd://127.0.0.1:{port}/swap:64M"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        Assert.True(await daemon.WaitForLogAsync("export 'swap:64M' attached", TimeSpan.FromSeconds(20)), daemon.Stderr);
        Assert.True(fs.Used - before >= 64 * MiB);
        qemu.Kill();
        // At once (the kernel resets the connection), not after keepalive or grace: 5 s leaves room for a busy host.
        Assert.True(await fs.WaitForUsedAsync(u => u <= before, TimeSpan.FromSeconds(5)), $"space not back within 5 s of SIGKILL ({fs.Used - before} B used):\n{daemon.Stderr}");
        Assert.True(await daemon.WaitForLogAsync("destroyed (connection lost; no token, no grace)"));
    }

    [Fact]
    public async Task Status_ListsExactlyTheClients_AndTheAreasInGrace()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var daemon = DaemonProcess.Start("--listen", "127.0.0.1:0", "--swap-dir", fs.Path, "--swap-budget", "1G", "--swap-grace", "60s");
        var port = await daemon.WaitForPortAsync();
        await using var a = await ConnectAsync(port, "swap/alpha:16M");
        await using var b = await ConnectAsync(port, "swap:24M");
        var gone = await ConnectAsync(port, "swap/gamma:8M");
        await b.RequestAsync(NbdCommand.Write, 0, 4096, payload: new byte[4096]);
        // 64 KiB: sent from the area's file by sendfile, counted all the same.
        await b.RequestAsync(NbdCommand.Read, 0, 65536);
        await gone.DisposeAsync();
        Assert.True(await daemon.WaitForLogAsync("kept for 00:01:00"));

        var status = await daemon.StatusAsync();
        Assert.Equal(["swap/alpha:16M", "swap:24M"], status.Clients.Select(c => c.Export));
        Assert.Equal([16 * MiB, 24 * MiB], status.Clients.Select(c => c.Size));
        Assert.Equal([16 * MiB, 24 * MiB], status.Clients.Select(c => c.ReservedBytes));
        Assert.Equal(4096, status.Clients[1].BytesWritten);
        Assert.Equal([0L, 65536L], status.Clients.Select(c => c.BytesRead));
        Assert.All(status.Clients, c => Assert.StartsWith("127.0.0.1:", c.Address));
        var swap = status.Swap!;
        Assert.Equal(48 * MiB, swap.InUse);
        Assert.Equal(1L << 30, swap.Budget);
        var grace = Assert.Single(swap.Areas, x => x.State == "grace");
        Assert.Equal(("gamma", 8 * MiB), (grace.Token, grace.Size));
        Assert.NotNull(grace.GraceDeadline);

        var (code, table, _) = await DaemonProcess.RunToEndAsync("status", "--control-socket", daemon.ControlSocket);
        Assert.Equal(0, code);
        Assert.Contains("swap/alpha:16M", table);
        Assert.Contains("waiting for their client", table);
        Assert.Contains("48M in use of a 1G budget", table);
    }

    [Fact]
    public async Task InetdMode_ServesARealClient()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        var port = Ports.Unused();
        await using var launcher = DaemonProcess.StartWith(
            ["systemd-socket-activate", "--accept", "--inetd", "-l", $"127.0.0.1:{port}"], "--inetd", "--swap-dir", fs.Path, "--log", "stderr");
        await WaitForListenerAsync(port, launcher);
        var result = await ExternalTool.RunAsync("qemu-io", ["-f", "raw", "-c", "write -P 0x5a 0 64k", "-c", "read -P 0x5a 0 64k", $"nbd://127.0.0.1:{port}/swap:32M"]);
        Assert.True(result.ExitCode == 0 && !result.All.Contains("fail", StringComparison.OrdinalIgnoreCase), result.All + launcher.Stderr);
        Assert.True(await launcher.WaitForLogAsync("destroyed (client disconnected)"), launcher.Stderr);
        Assert.Contains("conn 1 from 127.0.0.1:", launcher.Stderr);
        // The connection is stdin/stdout: not one log byte may have gone there.
        Assert.DoesNotContain("swap area", launcher.Stdout);
    }

    [Fact]
    public async Task InetdMode_RefusesAListeningSocket_WithAClearMessage()
    {
        var port = Ports.Unused();
        await using var launcher = DaemonProcess.StartWith(["systemd-socket-activate", "--inetd", "-l", $"127.0.0.1:{port}"], "--inetd", "--swap", "off", "--log", "stderr");
        await WaitForListenerAsync(port, launcher);
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, port);
        Assert.True(await launcher.WaitForLogAsync("needs a connected socket on standard input"), launcher.Stderr);
    }

    [Fact]
    public async Task SocketActivation_WithTwoSockets_ServesRealClientsOnBoth()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        var port = Ports.Unused();
        var second = Ports.Unused();
        await using var launcher = DaemonProcess.StartWith(["systemd-socket-activate", "-l", $"127.0.0.1:{port}", "-l", $"127.0.0.1:{second}"],
            "--swap-dir", fs.Path, "--swap-size", "64M");
        await WaitForListenerAsync(port, launcher);
        var info = await ExternalTool.RunOkAsync("nbdinfo", "--json", $"nbd://127.0.0.1:{port}/swap:48M");
        Assert.Contains("\"export-size\": 50331648", info);
        Assert.True(await launcher.WaitForLogAsync($"listening on 127.0.0.1:{port}"), launcher.Stderr);
        Assert.True(await launcher.WaitForLogAsync($"listening on 127.0.0.1:{second}"), launcher.Stderr);
        // The embedded default is not bound beside the passed sockets.
        Assert.DoesNotContain("listening on 0.0.0.0:9572", launcher.Stderr);
        Assert.DoesNotContain("listening on [::]:9572", launcher.Stderr);
        var io = await ExternalTool.RunAsync("qemu-io", ["-f", "raw", "-c", "write -P 7 1M 1M", "-c", "read -P 7 1M 1M", $"nbd://127.0.0.1:{second}/swap"]);
        Assert.True(io.ExitCode == 0 && !io.All.Contains("fail", StringComparison.OrdinalIgnoreCase), io.All);
    }

    [Fact]
    public async Task SocketActivation_OfTheDiscoveryPort_AProbeStartsTheDaemon_AndIsAnswered()
    {
        // netswapd.socket's ListenDatagram=: clients that find their server by discovery never connect first, so the
        // probe itself must start the service, wait in the passed socket and be answered from it.
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        var udp = Ports.Unused();
        await using var launcher = DaemonProcess.StartWith(["systemd-socket-activate", "--datagram", "-l", $"127.0.0.1:{udp}"],
            "--listen", "127.0.0.1:0", "--swap-dir", fs.Path, "--allow", "127.0.0.0/8", "--discovery", "on");
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!launcher.Stderr.Contains("Listening on", StringComparison.Ordinal) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }
        Assert.DoesNotContain("listening on 127.0.0.1", launcher.Stderr);   // netswapd has not started before the probe

        var reply = await DiscoveryProbes.AskAsync(udp, 99, TimeSpan.FromSeconds(20));
        Assert.True(reply is { ProbeId: 99 }, "no answer to the probe that started netswapd:\n" + launcher.Stderr);
        Assert.True(reply!.Value.Flags.HasFlag(NetSwap.Protocol.Discovery.DiscoveryReplyFlags.SwapAvailable));
        Assert.True(await launcher.WaitForLogAsync($"discovery: answering probes on 127.0.0.1:{udp}"), launcher.Stderr);
        // The passed socket, not one of its own on the default port beside it.
        Assert.DoesNotContain("0.0.0.0:9572 (udp)", launcher.Stderr);
    }

    [Fact]
    public void SocketActivationVariables_MeantForAnotherProcess_AreIgnoredAndRemoved()
    {
        Environment.SetEnvironmentVariable("LISTEN_PID", "1");
        Environment.SetEnvironmentVariable("LISTEN_FDS", "2");
        Environment.SetEnvironmentVariable("LISTEN_FDNAMES", "a:b");
        var (listening, connected, datagram) = NetSwap.Daemon.SystemdActivation.TakeSockets();
        Assert.Empty(listening);
        Assert.Empty(connected);
        Assert.Empty(datagram);
        Assert.Null(Environment.GetEnvironmentVariable("LISTEN_PID"));
        Assert.Null(Environment.GetEnvironmentVariable("LISTEN_FDS"));
        Assert.Null(Environment.GetEnvironmentVariable("LISTEN_FDNAMES"));
    }

    [Fact]
    public async Task OldstyleListener_ServesARealClient_ASwapAreaOfTheDefaultSize()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        var port = Ports.Unused();
        await using var daemon = DaemonProcess.Start("--listen", "127.0.0.1:0", "--oldstyle-listen", $"127.0.0.1:{port}", "--swap-dir", fs.Path, "--swap-size", "40M");
        await daemon.WaitForPortAsync();
        var info = await ExternalTool.RunOkAsync("nbdinfo", $"nbd://127.0.0.1:{port}");
        Assert.Contains("protocol: oldstyle", info);
        Assert.Contains("export-size: 41943040", info);
        var io = await ExternalTool.RunAsync("qemu-io", ["-f", "raw", "-c", "write -P 9 4096 8192", "-c", "read -P 9 4096 8192", $"nbd://127.0.0.1:{port}"]);
        Assert.True(io.ExitCode == 0 && !io.All.Contains("fail", StringComparison.OrdinalIgnoreCase), io.All);
        Assert.True(await daemon.WaitForLogAsync("(oldstyle)"));
    }

    /// <summary>systemd-socket-activate binds first and starts netswapd on the first connection.</summary>
    private static async Task WaitForListenerAsync(int port, DaemonProcess launcher)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline)
        {
            if (launcher.Stderr.Contains("Listening on", StringComparison.Ordinal))
            {
                return;
            }
            if (launcher.HasExited)
            {
                Assert.Fail("systemd-socket-activate exited:\n" + launcher.Stderr);
            }
            await Task.Delay(20);
        }
        Assert.Fail($"systemd-socket-activate did not listen on {port}:\n{launcher.Stderr}");
    }
}
