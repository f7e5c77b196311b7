using NetSwap.Tests.Support;

namespace NetSwap.Tests.EndToEnd;

/// <summary>
/// make e2e-install (tests/e2e-install): the Debian packages on Debian 12 systems made from Debian's packages, booted
/// under QEMU. The server guest boots with systemd as PID 1 and installs both packages with apt: the socket is
/// active, a discovery probe starts the service, which runs as netswap in its sandbox, `netswapd status` answers as
/// root, swap is attached from it through the kernel's NBD client and detached; apt purge leaves no unit, user,
/// directory or file of ours. The client guest is a small client whose initramfs update-initramfs built with the
/// client package installed: its init-premount script attaches swap by discovery before the root file system, and
/// the workload of tests/e2e passes with every page verified.
/// </summary>
[Collection(nameof(VmCollection))]
public class InstallVmTests
{
    private static readonly string Root = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", ".."));

    private static async Task<ExternalTool.Result> RunAsync(string part)
    {
        var deb = await ExternalTool.RunAsync("make", ["-C", Root, "deb"], TimeSpan.FromMinutes(15));
        Assert.True(deb.ExitCode == 0, string.Join('\n', deb.All.Split('\n').TakeLast(40)));
        var result = await ExternalTool.RunAsync(Path.Combine(Root, "tests", "e2e-install", "run.sh"), [part], TimeSpan.FromMinutes(30),
            new Dictionary<string, string> { ["E2E_LOG_DIR"] = Path.Combine(Root, "artifacts", "e2e-install", part) });
        Assert.True(result.ExitCode == 0, string.Join('\n', result.All.Split('\n').TakeLast(150)));
        Assert.Contains($"e2e-install: PASS ({part})", result.Stdout);
        return result;
    }

    [Fact]
    public async Task ServerGuestWithSystemd_InstallsRunsAndPurgesThePackages()
    {
        var result = await RunAsync("server");
        Assert.DoesNotContain("E2E-INSTALL: FAIL", result.Stdout);
        foreach (var check in new[]
        {
            "apt installs both packages", "netswapd.socket is active", "netswapd.service waits for its socket",
            "a discovery probe starts the service and is answered", "netswapd runs as netswap", "its sandbox: no capabilities",
            "its sandbox: a system-call filter", "netswapd status as root answers", "netswap attach 127.0.0.1", "the swap is on",
            "apt purge removes both", "no netswap user or group", "no unit of ours", "no file of ours",
        })
        {
            Assert.Contains("E2E-INSTALL: ok   " + check, result.Stdout);
        }
    }

    [Fact]
    public async Task ClientGuest_AttachesFromTheInitramfsUpdateInitramfsBuilt_AndPassesTheWorkload()
    {
        var result = await RunAsync("client");
        Assert.Contains("update-initramfs: Generating /boot/initrd.img-", result.Stdout);
        Assert.Contains("NETSWAP-E2E: swap on before init: /dev/nbd0", result.Stdout);
        Assert.Contains("netswap: found ", result.Stdout);   // by discovery, from the initramfs
        Assert.Contains("MEMTEST PASS", result.Stdout);
        Assert.Contains("swap already attached here", result.Stdout);
        Assert.Contains("NETSWAP-E2E: VERDICT PASS", result.Stdout);
        Assert.Contains("server areas after power-off: 0, bytes: 0", result.Stdout);
    }
    /// <summary>
    /// The same client with TLS=require in client.conf and its credentials in /etc/netswap/tls/client: the package's
    /// hook puts the kernel TLS modules and the credentials into the initramfs update-initramfs -u built, and the
    /// init-premount script attaches over kernel TLS from netswapd --tls require --tls-verify-client.
    /// </summary>
    [Fact]
    public async Task ClientGuest_WithTlsInClientConf_AttachesOverKernelTlsFromTheInitramfs()
    {
        var result = await RunAsync("client-tls");
        Assert.Contains("the initramfs now holds this machine's TLS key", result.Stdout);
        Assert.Contains("NETSWAP-E2E: swap on before init: /dev/nbd0", result.Stdout);
        Assert.Contains("kernel TLS): no process relays its data", result.Stdout);
        Assert.Contains("TLS established (Tls13", result.Stdout);
        Assert.Contains("MEMTEST PASS", result.Stdout);
        Assert.Contains("NETSWAP-E2E: VERDICT PASS", result.Stdout);
        Assert.Contains("server areas after power-off: 0, bytes: 0", result.Stdout);
    }
}
