using NetSwap.Tests.Support;

namespace NetSwap.Tests.Daemon;

/// <summary>
/// Under systemd the daemon lives in the directories its unit gives it (issue 15; issue 14: the control socket in a
/// directory made for the daemon): RUNTIME_DIRECTORY for the control socket (under DynamicUser= it landed in a
/// per-user directory under the private /tmp, where root's `netswapd status` could not find it), STATE_DIRECTORY for
/// the swap areas, CREDENTIALS_DIRECTORY (LoadCredential=) for TLS files the service user may not read where they lie.
/// </summary>
public class SystemdDirectoriesTests
{
    [Fact]
    public async Task RuntimeAndStateDirectory_HoldTheControlSocketAndTheSwapAreas()
    {
        var runtime = Scratch.Directory("netswap-runtime-");
        var state = Path.Combine(Scratch.Directory("netswap-state-"), "netswap");
        Directory.CreateDirectory(state, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        await using var daemon = DaemonProcess.StartWith(null,
            new Dictionary<string, string> { ["RUNTIME_DIRECTORY"] = runtime, ["STATE_DIRECTORY"] = state }, "--listen", "127.0.0.1:0");
        await daemon.WaitForPortAsync();
        var socket = Path.Combine(runtime, "netswapd.sock");
        Assert.True(File.Exists(socket), daemon.Stderr);
        Assert.Contains($"swap: directory {state} ", daemon.Stderr);
        var status = await ExternalTool.RunAsync("dotnet", [DaemonProcess.DaemonDll, "status", "--json", "--control-socket", socket]);
        Assert.True(status.ExitCode == 0, status.All);
        Assert.Contains($"\"directory\": \"{state}\"", status.Stdout);
    }

    [Fact]
    public async Task ACommandLineSwapDir_WinsOverStateDirectory()
    {
        var state = Scratch.Directory("netswap-state-");
        var chosen = Path.Combine(Scratch.Directory("netswap-chosen-"), "areas");
        await using var daemon = DaemonProcess.StartWith(null, new Dictionary<string, string> { ["STATE_DIRECTORY"] = state },
            "--listen", "127.0.0.1:0", "--swap-dir", chosen);
        await daemon.WaitForPortAsync();
        Assert.Contains($"swap: directory {chosen} ", daemon.Stderr);
    }

    [Fact]
    public async Task TlsKey_FromCredentialsDirectory_WhenTheCertificatesDirectoryHasNone()
    {
        var certs = await TestCertificates.GetAsync();
        // The certificates where the service may read them; the key only in what LoadCredential= hands over.
        var published = Scratch.Directory("netswap-tls-");
        File.Copy(Path.Combine(certs.ServerDirectory, "server-cert.pem"), Path.Combine(published, "server-cert.pem"));
        File.Copy(Path.Combine(certs.ServerDirectory, "ca-cert.pem"), Path.Combine(published, "ca-cert.pem"));
        var credentials = Scratch.Directory("netswap-credentials-");
        File.Copy(Path.Combine(certs.ServerDirectory, "server-key.pem"), Path.Combine(credentials, "server-key.pem"));

        string[] args = ["--listen", "127.0.0.1:0", "--swap-dir", Scratch.Directory("netswap-swap-"), "--tls", "on", "--tls-certificates", published];
        var without = await DaemonProcess.RunToEndAsync([.. args, "--check-config"]);
        Assert.Equal(1, without.ExitCode);
        Assert.Contains("server-key.pem", without.Stderr);

        await using var daemon = DaemonProcess.StartWith(null, new Dictionary<string, string> { ["CREDENTIALS_DIRECTORY"] = credentials }, args);
        var port = await daemon.WaitForPortAsync();
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        await socket.ConnectAsync(System.Net.IPAddress.Loopback, port);
        await using var client = new TestNbdClient(new System.Net.Sockets.NetworkStream(socket, ownsSocket: false));
        await client.StartAsync();
        Assert.Equal(NetSwap.Protocol.Nbd.NbdOptionReplyType.Ack, await client.StartTlsAsync());
        await client.GoAsync("swap:8M");
        Assert.True(await daemon.WaitForLogAsync("TLS established"), daemon.Stderr);
    }
}
