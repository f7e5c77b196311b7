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
    /// Creates the directory (0700) when it does not exist, or checks the one that does: it must hold nothing but areas
    /// an earlier netswapd left (named fallback files, <see cref="IsOwnLeftover"/>), and no other user may write to it.
    /// An existing directory is never changed: a mistyped --swap-dir /srv is refused with the name of what it holds,
    /// instead of being emptied. With <paramref name="checkOnly"/> (--check-config) nothing is created or changed.
    /// When the configured default cannot be created because we are not root, a per-user directory is used instead;
    /// <paramref name="fellBack"/> says so for the log.
    /// </summary>
    public static SwapDirectory Prepare(string configured, bool isDefault, out bool fellBack, bool checkOnly = false)
    {
        fellBack = false;
        try
        {
            return new SwapDirectory(UsePrivate(configured, checkOnly));
        }
        catch (UnauthorizedAccessException) when (isDefault && !IsRoot)
        {
            fellBack = true;
            return new SwapDirectory(UsePrivate($"/var/tmp/netswap-{GetEuid()}", checkOnly));
        }
    }

    private const UnixFileMode OthersWrite = UnixFileMode.GroupWrite | UnixFileMode.OtherWrite;

    private static string UsePrivate(string path, bool checkOnly)
    {
        var full = System.IO.Path.GetFullPath(path);
        if (File.Exists(full))
        {
            throw new IOException($"swap-dir {full} is a file, not a directory");
        }
        if (!System.IO.Directory.Exists(full))
        {
            if (!checkOnly)
            {
                // Ours from birth: 0700, so the named fallback files are out of everyone else's reach too.
                System.IO.Directory.CreateDirectory(full, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
            return full;
        }
        var mode = File.GetUnixFileMode(full);
        if ((mode & OthersWrite) != 0)
        {
            // Another user could plant or swap files there (a /tmp, or a /var/tmp path made by someone else).
            throw new IOException($"swap-dir {full} is writable by other users (mode {Convert.ToString((int)mode, 8)}); give netswapd a directory of its own");
        }
        if (!IsRoot && Hosting.FileKind.Owner(full) is { } owner && owner != GetEuid())
        {
            // Not ours (a /var/tmp/netswap-UID path made in advance by another user): the old chmod failed on such a
            // directory with EPERM, and that refusal is kept without changing anything. Root may use a directory the
            // service user owns (the package's /var/lib/netswap); areas have no names there for anyone to reach.
            throw new IOException($"swap-dir {full} belongs to uid {owner}, not to this process (uid {GetEuid()}); give netswapd a directory of its own");
        }
        foreach (var entry in new DirectoryInfo(full).EnumerateFileSystemInfos())
        {
            if (!IsOwnLeftover(entry))
            {
                throw new IOException($"swap-dir {full} holds '{entry.Name}', which netswapd did not create; give it an empty or new directory of its own (nothing there was touched)");
            }
        }
        return full;
    }

    /// <summary>The fallback name of <see cref="CreateAnonymousFile"/>: "area-" and 24 upper-case hex digits, a regular file.</summary>
    private static bool IsOwnLeftover(FileSystemInfo entry) =>
        entry is FileInfo { LinkTarget: null } && entry.Name.Length == AreaPrefix.Length + 24 && entry.Name.StartsWith(AreaPrefix, StringComparison.Ordinal)
        && entry.Name.AsSpan(AreaPrefix.Length).IndexOfAnyExcept(UpperHex) < 0;

    private static readonly System.Buffers.SearchValues<char> UpperHex = System.Buffers.SearchValues.Create("0123456789ABCDEF");

    private const string AreaPrefix = "area-";

    /// <summary>
    /// Removes the areas an earlier run left behind (named fallback files of a daemon that died between create and
    /// unlink), and only those: <see cref="Prepare"/> has refused a directory holding anything else.
    /// </summary>
    public List<(string Name, long Size)> RemoveLeftovers()
    {
        var removed = new List<(string, long)>();
        foreach (var entry in new DirectoryInfo(Path).EnumerateFileSystemInfos())
        {
            if (IsOwnLeftover(entry))
            {
                var size = ((FileInfo)entry).Length;
                entry.Delete();
                removed.Add((entry.Name, size));
            }
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
        var name = System.IO.Path.Combine(Path, AreaPrefix + Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(12)));
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
