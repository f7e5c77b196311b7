using System.Diagnostics;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Server;

/// <summary>
/// The two-minute version of `make soak` (tests/soak/soak.py): clients of every kind connect, do verified I/O and
/// vanish in every way while SIGHUP arrives; afterwards nothing is left unanswered or behind, RSS is back near where it
/// was once warm, and SIGTERM ends the daemon in time. The script's own checks decide; this test fails with its output.
/// </summary>
public class SoakTests
{
    [Fact]
    public async Task TwoMinuteSoak_LeavesNothingBehind()
    {
        ExternalTool.Require("qemu-io");
        var script = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "tests", "soak", "soak.py"));
        var start = new ProcessStartInfo("/usr/bin/python3")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { script, "--minutes", "2", "--daemon", $"dotnet {DaemonProcess.DaemonDll}" })
        {
            start.ArgumentList.Add(arg);
        }
        using var soak = Process.Start(start)!;
        var stdout = soak.StandardOutput.ReadToEndAsync();
        var stderr = soak.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(6));
        try
        {
            await soak.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            soak.Kill(entireProcessTree: true);
            Assert.Fail($"the soak did not end within 6 minutes:\n{await stdout}\n{await stderr}");
        }
        var output = await stdout + await stderr;
        Assert.True(soak.ExitCode == 0, output);
        Assert.Contains("soak: 0 failures", output);
    }
}
