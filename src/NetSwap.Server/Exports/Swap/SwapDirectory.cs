using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace NetSwap.Server.Exports.Swap;

/// <summary>
/// The directory swap areas live in, and the files in it. An area is opened with O_TMPFILE, so it has no name on disk
/// and the kernel frees its blocks when the last descriptor closes: also when netswapd is killed with SIGKILL. Where the
/// file system lacks O_TMPFILE, a random name is created and unlinked at once.
/// </summary>
internal sealed partial class SwapDirectory
{
    private const int ORdWr = 0x2;
    private const int OCreat = 0x40;
    private const int OExcl = 0x80;
    private const int OCloexec = 0x80000;
    private const int OTmpfile = 0x410000;
    private const int EISDIR = 21;
    private const int EOPNOTSUPP = 95;
    private const int ENOENT = 2;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "statvfs64", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int StatVfs(string path, out StatVfsBuffer buffer);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint GetEuid();

    [StructLayout(LayoutKind.Sequential)]
    private struct StatVfsBuffer
    {
        public ulong BlockSize;
        public ulong FragmentSize;
        public ulong Blocks;
        public ulong BlocksFree;
        public ulong BlocksAvailable;
        public ulong Files;
        public ulong FilesFree;
        public ulong FilesAvailable;
        public ulong FileSystemId;
        public ulong Flags;
        public ulong NameMax;
        public ulong Spare0;
        public ulong Spare1;
        public ulong Spare2;
    }

    private bool _noTmpfile;

    private SwapDirectory(string path) => Path = path;

    public string Path { get; }

    /// <summary>Whether areas are nameless from birth (O_TMPFILE) or briefly named.</summary>
    public bool UsesTmpfile => !_noTmpfile;

    public static bool IsRoot => GetEuid() == 0;

    /// <summary>
    /// Creates (0700) or checks the directory. When the configured one cannot be created because we are not root, a
    /// per-user directory is used instead; <paramref name="fellBack"/> says so for the log.
    /// </summary>
    public static SwapDirectory Prepare(string configured, bool isDefault, out bool fellBack)
    {
        fellBack = false;
        try
        {
            return new SwapDirectory(CreatePrivate(configured));
        }
        catch (UnauthorizedAccessException) when (isDefault && !IsRoot)
        {
            fellBack = true;
            return new SwapDirectory(CreatePrivate($"/var/tmp/netswap-{GetEuid()}"));
        }
    }

    private static string CreatePrivate(string path)
    {
        var info = System.IO.Directory.CreateDirectory(path);
        // Fails (EPERM) on a directory someone else owns, e.g. a /var/tmp path planted by another user: refuse it.
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return info.FullName;
    }

    /// <summary>Removes whatever an earlier run left behind (named fallback files of a crashed daemon).</summary>
    public List<(string Name, long Size)> RemoveLeftovers()
    {
        var removed = new List<(string, long)>();
        foreach (var entry in new DirectoryInfo(Path).EnumerateFileSystemInfos())
        {
            var size = entry is FileInfo file ? file.Length : 0;
            if (entry is DirectoryInfo directory)
            {
                directory.Delete(recursive: true);
            }
            else
            {
                entry.Delete();
            }
            removed.Add((entry.Name, size));
        }
        return removed;
    }

    /// <summary>A new, empty, nameless file (mode 0600) in the directory.</summary>
    public SafeFileHandle CreateAnonymousFile()
    {
        if (!_noTmpfile)
        {
            var fd = Open(Path, OTmpfile | ORdWr | OCloexec, 0x180);
            if (fd >= 0)
            {
                return new SafeFileHandle(fd, ownsHandle: true);
            }
            var errno = Marshal.GetLastPInvokeError();
            if (errno is not (EOPNOTSUPP or EISDIR or ENOENT))
            {
                throw new IOException($"cannot create a swap file in {Path}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})", errno);
            }
            _noTmpfile = true;
        }
        var name = System.IO.Path.Combine(Path, "area-" + Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(12)));
        var named = Open(name, OCreat | OExcl | ORdWr | OCloexec, 0x180);
        if (named < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException($"cannot create a swap file in {Path}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})", errno);
        }
        File.Delete(name);
        return new SafeFileHandle(named, ownsHandle: true);
    }

    /// <summary>Total and available bytes of the file system holding the directory.</summary>
    public (long Total, long Available) Space()
    {
        if (StatVfs(Path, out var s) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException($"statvfs {Path}: {Marshal.GetPInvokeErrorMessage(errno)}", errno);
        }
        return ((long)(s.Blocks * s.FragmentSize), (long)(s.BlocksAvailable * s.FragmentSize));
    }
}
