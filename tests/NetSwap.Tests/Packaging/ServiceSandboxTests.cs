using System.Globalization;
using System.Text.RegularExpressions;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Packaging;

/// <summary>
/// netswapd.service's sandbox: `systemd-analyze security` rates it 3.0 or lower, and the native daemon does all its
/// work inside it — the system-call filter, MemoryDenyWriteExecute, no capabilities, an unprivileged user — as read from
/// the unit file by tests/sandbox/unit-sandbox.py (what can be had without systemd as PID 1; make e2e-install runs the
/// real unit). A sandbox that scores well and breaks the service would be worse than none.
/// </summary>
[Collection(nameof(TimingCollection))]
public partial class ServiceSandboxTests
{
    private static readonly string Repository = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", ".."));
    private static readonly string Unit = Path.Combine(Repository, "packaging", "systemd", "netswapd.service");
    private static readonly string Sandbox = Path.Combine(Repository, "tests", "sandbox", "unit-sandbox.py");

    [GeneratedRegex(@"Overall exposure level for netswapd\.service: (\d+\.\d+)")]
    private static partial Regex Exposure();

    [Fact]
    public async Task SystemdAnalyzeSecurity_RatesTheUnit3OrLower()
    {
        var result = await ExternalTool.RunAsync("systemd-analyze", ["security", "--offline=true", "--no-pager", Unit]);
        var match = Exposure().Match(result.All);
        Assert.True(match.Success, result.All);
        var level = double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.True(level <= 3.0, $"exposure {level}:\n{result.All}");
    }

    [Fact]
    public async Task TheSandbox_IsReal_ACallTheFilterDeniesFails()
    {
        // sched_setaffinity is in @resources, which the unit takes away: inside, it fails; outside, it works.
        var script = "import os; os.sched_setaffinity(0, os.sched_getaffinity(0)); print('allowed')";
        var inside = await ExternalTool.RunAsync("/usr/bin/python3", [Sandbox, Unit, "--user", "nobody", "--", "/usr/bin/python3", "-c", script]);
        Assert.Contains("Operation not permitted", inside.All);
        var outside = await ExternalTool.RunAsync("/usr/bin/python3", ["-c", script]);
        Assert.Contains("allowed", outside.Stdout);
        // MemoryDenyWriteExecute: no mapping both writable and executable.
        var wx = await ExternalTool.RunAsync("/usr/bin/python3", [Sandbox, Unit, "--user", "nobody", "--", "/usr/bin/python3", "-c",
            "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC); print('mapped')"]);
        Assert.DoesNotContain("mapped", wx.Stdout);
    }

    [Fact]
    public async Task NativeDaemon_InsideTheUnitsSandbox_ServesSwap_Tls_Discovery_Status_Reload_AndStops()
    {
        ExternalTool.Require("qemu-io");
        var work = Scratch.Directory("netswap-sandbox-");
        var swap = Path.Combine(work, "swap");
        var run = Path.Combine(work, "run");
        var tls = Path.Combine(work, "tls");
        await ExternalTool.RunOkAsync(Path.Combine(Repository, "scripts", "netswap-make-certs"), tls, "--server-name", "localhost", "--client", "pc01");
        Directory.CreateDirectory(swap, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        Directory.CreateDirectory(run, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        // As systemd hands them over: the state and runtime directories and the credentials belong to the service's
        // user (nobody here); the scratch directory above them must let it through.
        await ExternalTool.RunOkAsync("chown", "-R", "nobody:nogroup", swap, run, tls);
        File.SetUnixFileMode(work, (UnixFileMode)0b111_101_101);
        var udp = Ports.Unused();

        await using var daemon = DaemonProcess.StartNative(["/usr/bin/python3", Sandbox, Unit, "--user", "nobody", "--"],
            "--listen", "127.0.0.1:0", "--swap-dir", swap, "--control-socket", Path.Combine(run, "netswapd.sock"),
            "--tls", "on", "--tls-certificates", Path.Combine(tls, "server"), "--tls-verify-client",
            "--discovery", "on", "--discovery-port", udp.ToString(CultureInfo.InvariantCulture), "--allow", "127.0.0.0/8", "-v");
        var port = await daemon.WaitForPortAsync();
        Assert.Contains("(unprivileged)", daemon.Stderr);   // it runs as nobody, not root

        var io = await ExternalTool.RunAsync("qemu-io", ["-f", "raw", "-c", "write -P 7 1M 1M", "-c", "read -P 7 1M 1M", $"nbd://127.0.0.1:{port}/swap:64M"]);
        Assert.True(io.ExitCode == 0 && !io.All.Contains("fail", StringComparison.OrdinalIgnoreCase), io.All + daemon.Stderr);
        var secure = await ExternalTool.RunAsync("nbdinfo", [$"nbds://127.0.0.1:{port}/swap:32M?tls-certificates={Path.Combine(tls, "clients", "pc01")}"]);
        Assert.True(secure.ExitCode == 0 && secure.Stdout.Contains("export-size: 33554432", StringComparison.Ordinal), secure.All + daemon.Stderr);

        var reply = await DiscoveryProbes.AskAsync(udp, 5, TimeSpan.FromSeconds(10));
        Assert.True(reply is { ProbeId: 5 }, "no answer to a discovery probe:\n" + daemon.Stderr);

        var status = await ExternalTool.RunAsync(DaemonProcess.NativeDaemon, ["status", "--control-socket", Path.Combine(run, "netswapd.sock")]);
        Assert.True(status.ExitCode == 0 && status.Stdout.Contains("up since", StringComparison.Ordinal), status.All);

        await ExternalTool.RunOkAsync("kill", "-HUP", daemon.Pid.ToString(CultureInfo.InvariantCulture));
        Assert.True(await daemon.WaitForLogAsync("configuration reloaded"), daemon.Stderr);
        await ExternalTool.RunOkAsync("kill", "-TERM", daemon.Pid.ToString(CultureInfo.InvariantCulture));
        Assert.Equal(0, await daemon.WaitForExitAsync(TimeSpan.FromSeconds(10)));
        foreach (var bad in new[] { "Operation not permitted", "Permission denied", "crit", "Unhandled", "fail " })
        {
            Assert.DoesNotContain(bad, daemon.Stderr);
        }
    }
}
