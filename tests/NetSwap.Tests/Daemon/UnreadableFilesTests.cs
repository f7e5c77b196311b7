using NetSwap.Tests.Support;

namespace NetSwap.Tests.Daemon;

/// <summary>
/// Files named in settings that the daemon cannot use give one line naming the path and the reason, and exit 1 at
/// start, or keep the configuration in force on SIGHUP (issue 14, items 6 and 7: a key the service user could not read
/// ended in an unhandled UnauthorizedAccessException, exit 134; a config file had no size limit).
/// </summary>
public class UnreadableFilesTests
{
    // The service user of the packages is not root: run the daemon as nobody, with root's 0600 files.
    private static readonly string[] AsNobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];

    private static string OpenDirectory()
    {
        var dir = Scratch.Directory("netswap-files-");
        File.SetUnixFileMode(dir, (UnixFileMode)0x1ED); // 0755: the files' own modes decide
        return dir;
    }

    private static async Task<(int Code, string Stderr)> RunAsNobodyAsync(params string[] args)
    {
        await using var daemon = DaemonProcess.StartWith(AsNobody, [.. args, "--listen", "127.0.0.1:0", "--swap", "off", "--control-socket", "/nonexistent/ctl.sock"]);
        var code = await daemon.WaitForExitAsync(TimeSpan.FromSeconds(30));
        return (code, daemon.Stderr);
    }

    [Fact]
    public async Task TlsKeyOnlyRootCanRead_IsOneLineAndExit1()
    {
        var certificates = await TestCertificates.GetAsync();
        var dir = OpenDirectory();
        var cert = Path.Combine(dir, "server-cert.pem");
        var key = Path.Combine(dir, "server-key.pem");
        File.Copy(Path.Combine(certificates.ServerDirectory, "server-cert.pem"), cert);
        File.Copy(Path.Combine(certificates.ServerDirectory, "server-key.pem"), key);
        File.SetUnixFileMode(cert, (UnixFileMode)0x1A4); // 0644
        File.SetUnixFileMode(key, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var (code, stderr) = await RunAsNobodyAsync("--tls", "on", "--tls-cert", cert, "--tls-key", key);
        Assert.True(code == 1, stderr);
        Assert.Contains($"TLS key {key} cannot be read", stderr);
        Assert.DoesNotContain("Unhandled exception", stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Fact]
    public async Task ClientListOnlyRootCanRead_IsOneLineAndExit1()
    {
        var dir = OpenDirectory();
        var list = Path.Combine(dir, "clients");
        await File.WriteAllTextAsync(list, "127.0.0.1\n");
        File.SetUnixFileMode(list, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var (code, stderr) = await RunAsNobodyAsync("--clients", list);
        Assert.True(code == 1, stderr);
        Assert.Contains($"client list {list} cannot be read", stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Fact]
    public async Task ConfigFileThatIsADevice_IsRefusedByName()
    {
        var dir = OpenDirectory();
        var config = Path.Combine(dir, "netswapd.toml");
        File.CreateSymbolicLink(config, "/dev/zero");
        var (code, _, stderr) = await DaemonProcess.RunToEndAsync("--config", config, "--listen", "127.0.0.1:0", "--swap", "off");
        Assert.Equal(1, code);
        Assert.Contains($"config file {config} is not a regular file", stderr);
    }

    [Fact]
    public async Task OversizedConfigOnSighup_KeepsTheConfigurationInForce()
    {
        var dir = OpenDirectory();
        var config = Path.Combine(dir, "netswapd.toml");
        await File.WriteAllTextAsync(config, "max-clients = 100\n");
        await using var daemon = DaemonProcess.Start("--config", config, "--listen", "127.0.0.1:0", "--swap", "off");
        await daemon.WaitForPortAsync();
        await File.WriteAllTextAsync(config, "# " + new string('x', 2 << 20) + "\n");
        daemon.Signal(1);
        Assert.True(await daemon.WaitForLogAsync("is larger than"), daemon.Stderr);
        Assert.False(daemon.HasExited);
        await daemon.StatusAsync();
    }
}
