using System.Runtime.InteropServices;

namespace NetSwap.Tests.Support;

/// <summary>
/// A private tmpfs of a fixed size, so that the space a swap area takes and gives back can be read exactly with
/// statvfs, unaffected by anything else on the machine. Needs root (as `make test` and CI run).
/// </summary>
public sealed partial class TmpfsMount : IAsyncDisposable
{
    private TmpfsMount(string path) => Path = path;

    public string Path { get; }

    public static async Task<TmpfsMount> CreateAsync(long size)
    {
        var path = Directory.CreateTempSubdirectory("netswap-tmpfs-").FullName;
        var result = await ExternalTool.RunAsync("mount", ["-t", "tmpfs", "-o", $"size={size},mode=0700", "tmpfs", path]);
        Assert.True(result.ExitCode == 0, $"mounting a tmpfs needs root (make test runs as root in CI): {result.All}");
        return new TmpfsMount(path);
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct StatVfsBuffer
    {
        public ulong BlockSize, FragmentSize, Blocks, BlocksFree, BlocksAvailable, Files, FilesFree, FilesAvailable, Id, Flags, NameMax, S0, S1, S2;
    }

    [LibraryImport("libc", EntryPoint = "statvfs64", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int StatVfs(string path, out StatVfsBuffer buffer);

    public long Used
    {
        get
        {
            Assert.Equal(0, StatVfs(Path, out var s));
            return (long)((s.Blocks - s.BlocksFree) * s.FragmentSize);
        }
    }

    /// <summary>Waits until the used space satisfies the condition (space comes back when descriptors close).</summary>
    public async Task<bool> WaitForUsedAsync(Func<long, bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (condition(Used))
            {
                return true;
            }
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }
            await Task.Delay(10);
        }
    }

    public async ValueTask DisposeAsync()
    {
        var result = await ExternalTool.RunAsync("umount", ["-l", Path]);
        if (result.ExitCode == 0)
        {
            Directory.Delete(Path);
        }
    }
}
