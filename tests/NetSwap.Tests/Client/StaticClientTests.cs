using NetSwap.Tests.Support;

namespace NetSwap.Tests.Client;

/// <summary>dist/netswap as it ships (make dist): statically linked, small, and runnable alone.</summary>
public class StaticClientTests
{
    private static string Binary => Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "dist", "netswap"));

    [Fact]
    public async Task IsStaticallyLinked_AndDiscoversWithinAFewMebibytes()
    {
        Assert.True(File.Exists(Binary), $"{Binary} is missing: make test builds it (make dist)");
        var file = await ExternalTool.RunOkAsync("file", Binary);
        Assert.Contains("statically linked", file);
        var measured = await ExternalTool.RunAsync("/usr/bin/time", ["-f", "peak %M KiB", Binary, "discover", "--address", "127.0.0.1", "--port", "9", "--timeout", "300ms"]);
        var peak = long.Parse(measured.Stderr.Split('\n').Single(l => l.StartsWith("peak ", StringComparison.Ordinal)).Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(peak, 1, 8 * 1024);
        Assert.Contains("no swap server answered", measured.Stderr);
    }

    [Fact]
    public async Task RunsInAnEmptyChroot_WithoutProcOrDev()
    {
        var root = Directory.CreateTempSubdirectory("netswap-chroot-").FullName;
        try
        {
            File.Copy(Binary, Path.Combine(root, "netswap"));
            File.SetUnixFileMode(Path.Combine(root, "netswap"), UnixFileMode.UserRead | UnixFileMode.UserExecute);
            var result = await ExternalTool.RunAsync("chroot", [root, "/netswap", "--help"]);
            Assert.True(result.ExitCode == 0, result.All);
            Assert.Contains("attach [SERVER[:PORT]]", result.Stdout);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
