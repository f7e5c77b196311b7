using System.Net;
using System.Net.Sockets;
using NetSwap.Protocol.Nbd;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Daemon;

/// <summary>netswapd as administrators run it: start-up errors, serving, and SIGTERM.</summary>
public class DaemonProcessTests
{
    [Fact]
    public async Task BrokenConfigFile_RefusesToStart_NamingFileLineAndKey()
    {
        var path = Path.GetTempFileName();
        try
        {
            await File.WriteAllTextAsync(path, "listen = [\"127.0.0.1:0\"]\n\nshutdown-timeout = \"forever\"\n");
            var (code, _, stderr) = await DaemonProcess.RunToEndAsync("--config", path);
            Assert.Equal(1, code);
            Assert.Contains($"{path}:3: key 'shutdown-timeout': 'forever' is not a duration", stderr);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task MissingExportFile_RefusesToStart()
    {
        var (code, _, stderr) = await DaemonProcess.RunToEndAsync("--listen", "127.0.0.1:0", "--export", "gone=/nonexistent/disk.img");
        Assert.Equal(1, code);
        Assert.Contains("export 'gone': cannot open /nonexistent/disk.img", stderr);
    }

    [Fact]
    public async Task UsageError_ExitsWith2()
    {
        var (code, _, stderr) = await DaemonProcess.RunToEndAsync("--no-such-option");
        Assert.Equal(2, code);
        Assert.Contains("unknown option '--no-such-option'", stderr);
    }

    [Fact]
    public async Task Help_And_Version()
    {
        var (code, stdout, _) = await DaemonProcess.RunToEndAsync("--help");
        Assert.Equal(0, code);
        Assert.Contains("--listen <ADDR:PORT>", stdout);
        (code, stdout, _) = await DaemonProcess.RunToEndAsync("--version");
        Assert.Equal(0, code);
        Assert.StartsWith("netswapd ", stdout);
    }

    [Fact]
    public async Task Serves_ThenExitsZeroOnSigterm_AfterFinishingRequests()
    {
        var dir = Directory.CreateTempSubdirectory("netswapd-").FullName;
        var image = Path.Combine(dir, "disk.img");
        await using (var f = File.Create(image))
        {
            f.SetLength(16 << 20);
        }
        await using var daemon = DaemonProcess.Start("--listen", "127.0.0.1:0", "--export", $"disk={image}", "--swap", "off", "-v");
        var port = await daemon.WaitForPortAsync();
        Assert.True(await daemon.WaitForLogAsync("export 'disk'"));

        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await socket.ConnectAsync(IPAddress.Loopback, port);
        }
        catch (SocketException e)
        {
            Assert.Fail($"connect to {port}: {e.Message}\n{daemon.Stderr}");
        }
        await using var client = new TestNbdClient(new NetworkStream(socket, ownsSocket: true));
        await client.StartAsync();
        await client.GoAsync("disk");
        var data = new byte[1 << 20];
        new Random(3).NextBytes(data);
        Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Write, 4096, (uint)data.Length, payload: data)).Error);
        Assert.True(await daemon.WaitForLogAsync("conn 1 from 127.0.0.1:"));

        daemon.Signal(15);
        Assert.Equal(0, await daemon.WaitForExitAsync(TimeSpan.FromSeconds(20)));
        Assert.Contains("shutting down", daemon.Stderr);
        Assert.Contains("stopped", daemon.Stderr);
        Assert.True(await client.IsClosedAsync(TimeSpan.FromSeconds(5)));
        var bytes = await File.ReadAllBytesAsync(image);
        Assert.Equal(data, bytes[4096..(4096 + data.Length)]);
        Directory.Delete(dir, true);
    }

    /// <summary>
    /// nohup starts a program with SIGHUP ignored, and a disposition of "ignore" survives exec; .NET installs no handler
    /// for an ignored signal, so without SignalDispositions a daemon started under nohup never reloaded.
    /// </summary>
    [Fact]
    public async Task Sighup_Reloads_EvenWhenStartedUnderNohup()
    {
        var image = Path.Combine(Scratch.Directory("netswapd-nohup-"), "disk.img");
        await using (var f = File.Create(image))
        {
            f.SetLength(1 << 20);
        }
        await using var daemon = DaemonProcess.StartWith(["nohup"], "--listen", "127.0.0.1:0", "--export", $"disk={image}", "--swap", "off");
        await daemon.WaitForPortAsync();
        var status = await File.ReadAllTextAsync($"/proc/{daemon.Pid}/status");
        Assert.False(NetSwap.Daemon.SignalDispositions.IsIgnored(NetSwap.Daemon.SignalDispositions.SigHup, status), status);

        daemon.Signal(NetSwap.Daemon.SignalDispositions.SigHup);
        Assert.True(await daemon.WaitForLogAsync("configuration reloaded"), daemon.Stderr);
        Assert.False(daemon.HasExited);
    }

    [Theory]
    [InlineData("Name:\tnetswapd\nSigIgn:\t0000000000001007\nSigCgt:\t0\n", 1, true)]
    [InlineData("Name:\tnetswapd\nSigIgn:\t0000000000001006\nSigCgt:\t1\n", 1, false)]
    [InlineData("SigIgn:\t0000000000004000\n", 15, true)]
    [InlineData("SigIgn:\t0000000000004000\n", 14, false)]
    [InlineData("no such line\n", 1, false)]
    [InlineData("", 1, false)]
    public void SignalDispositions_ReadTheIgnoredMask(string status, int signal, bool ignored) =>
        Assert.Equal(ignored, NetSwap.Daemon.SignalDispositions.IsIgnored(signal, status));

    [Fact]
    public async Task CheckConfig_ValidatesWithoutServing()
    {
        var (code, stdout, _) = await DaemonProcess.RunToEndAsync("--check-config", "--listen", "127.0.0.1:1", "--swap", "off");
        Assert.Equal(0, code);
        Assert.Contains("configuration valid", stdout);
    }
}
