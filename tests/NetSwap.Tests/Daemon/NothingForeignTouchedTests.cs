using NetSwap.Tests.Support;

namespace NetSwap.Tests.Daemon;

/// <summary>
/// netswapd deletes only files it created and changes the mode of no directory it did not create (issue 14, item 5:
/// every start emptied --swap-dir recursively and set it to 0700, --check-config included; --control-socket set an
/// existing parent to 0700 and replaced a regular file at its path).
/// </summary>
public class NothingForeignTouchedTests
{
    private const UnixFileMode Shared = (UnixFileMode)0x3FF; // 0777 plus nothing: group and others may write

    private static string NewDirectory(UnixFileMode mode)
    {
        var path = Scratch.Directory("netswap-own-");
        File.SetUnixFileMode(path, mode);
        return path;
    }

    [Fact]
    public async Task SwapDirHoldingForeignFiles_IsRefusedByName_AndLeftAsItWas()
    {
        var dir = NewDirectory(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
        var precious = Path.Combine(dir, "thesis.odt");
        await File.WriteAllTextAsync(precious, "four years of work");
        Directory.CreateDirectory(Path.Combine(dir, "www"));
        var mode = File.GetUnixFileMode(dir);
        foreach (var args in new[] { new[] { "--listen", "127.0.0.1:0", "--swap-dir", dir }, ["--check-config", "--listen", "127.0.0.1:0", "--swap-dir", dir] })
        {
            var (code, _, stderr) = await DaemonProcess.RunToEndAsync(args);
            Assert.Equal(1, code);
            Assert.Contains($"swap-dir {dir} holds '", stderr);
            Assert.DoesNotContain("   at ", stderr);
            Assert.Equal("four years of work", await File.ReadAllTextAsync(precious));
            Assert.True(Directory.Exists(Path.Combine(dir, "www")));
            Assert.Equal(mode, File.GetUnixFileMode(dir));
        }
    }

    [Fact]
    public async Task SwapDirWritableByOthers_IsRefused_AndKeepsItsMode()
    {
        var dir = NewDirectory(Shared);
        var (code, _, stderr) = await DaemonProcess.RunToEndAsync("--listen", "127.0.0.1:0", "--swap-dir", dir);
        Assert.Equal(1, code);
        Assert.Contains("writable by other users", stderr);
        Assert.Equal(Shared, File.GetUnixFileMode(dir));
    }

    [Fact]
    public async Task SwapDirOwnedByAnotherUser_IsRefused_AndLeftAsItWas()
    {
        // Made in advance by someone else (root here), readable by all: the service user (nobody) must not adopt it.
        var dir = NewDirectory((UnixFileMode)0x1ED);
        await using var daemon = DaemonProcess.StartWith(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
            "--listen", "127.0.0.1:0", "--swap-dir", dir);
        Assert.Equal(1, await daemon.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains($"swap-dir {dir} belongs to uid 0", daemon.Stderr);
        Assert.Equal((UnixFileMode)0x1ED, File.GetUnixFileMode(dir));
    }

    [Fact]
    public async Task CheckConfig_CreatesNothing()
    {
        var parent = NewDirectory(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var dir = Path.Combine(parent, "not-yet");
        var (code, stdout, stderr) = await DaemonProcess.RunToEndAsync("--check-config", "--listen", "127.0.0.1:0", "--swap-dir", dir);
        Assert.True(code == 0, stderr);
        Assert.Contains("configuration valid", stdout);
        Assert.False(Directory.Exists(dir));
        Assert.Empty(Directory.EnumerateFileSystemEntries(parent));
    }

    [Fact]
    public async Task SwapDirThatDoesNotExist_IsCreatedPrivate()
    {
        var parent = NewDirectory(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var dir = Path.Combine(parent, "swap");
        await using var daemon = DaemonProcess.Start("--listen", "127.0.0.1:0", "--swap-dir", dir);
        await daemon.WaitForPortAsync();
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(dir) & (UnixFileMode)0x1FF);
    }

    [Fact]
    public async Task ControlSocketInASharedDirectory_LeavesItsModeAlone()
    {
        var shared = NewDirectory(Shared | UnixFileMode.StickyBit);
        var socket = Path.Combine(shared, "netswapd.sock");
        var swap = Path.Combine(NewDirectory(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute), "swap");
        await using (var daemon = DaemonProcess.Start("--listen", "127.0.0.1:0", "--swap-dir", swap, "--control-socket", socket))
        {
            await daemon.WaitForPortAsync();
            Assert.Equal(Shared | UnixFileMode.StickyBit, File.GetUnixFileMode(shared));
        }
        Assert.Equal(Shared | UnixFileMode.StickyBit, File.GetUnixFileMode(shared));
    }

    [Fact]
    public async Task ARegularFileAtTheControlSocketPath_IsNotReplaced()
    {
        var dir = NewDirectory(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var path = Path.Combine(dir, "netswapd.sock");
        await File.WriteAllTextAsync(path, "not a socket");
        var swap = Path.Combine(dir, "swap");
        // The status socket is a convenience: the daemon serves on without it, and says why.
        await using (var daemon = DaemonProcess.Start("--listen", "127.0.0.1:0", "--swap-dir", swap, "--control-socket", path))
        {
            await daemon.WaitForPortAsync();
            Assert.True(await daemon.WaitForLogAsync("is not a socket"), daemon.Stderr);
        }
        Assert.Equal("not a socket", await File.ReadAllTextAsync(path));
    }
}
