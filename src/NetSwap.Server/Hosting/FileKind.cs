using System.Runtime.InteropServices;

namespace NetSwap.Server.Hosting;

/// <summary>
/// What .NET does not say about a path: whether it is a socket or a regular file, and who owns it (stat/lstat). Read
/// from struct stat as x86-64 lays it out; on other architectures every question answers "cannot tell" and callers
/// take the side that deletes nothing.
/// </summary>
internal static unsafe partial class FileKind
{
    private const uint TypeMask = 0xF000;
    private const uint Socket = 0xC000;
    private const uint Regular = 0x8000;
    // struct stat on x86-64: st_dev (8), st_ino (8), st_nlink (8), st_mode (4), st_uid (4); 144 bytes in all.
    private const int ModeOffset = 24;
    private const int UidOffset = 28;
    private const int StatSize = 144;

    [LibraryImport("libc", EntryPoint = "lstat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int LStat(string path, byte* buffer);

    [LibraryImport("libc", EntryPoint = "stat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Stat(string path, byte* buffer);

    private static bool TryStat(string path, bool followLink, out uint mode, out uint owner)
    {
        mode = owner = 0;
        if (RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return false;
        }
        var buffer = stackalloc byte[StatSize];
        if ((followLink ? Stat(path, buffer) : LStat(path, buffer)) != 0)
        {
            return false;
        }
        mode = *(uint*)(buffer + ModeOffset);
        owner = *(uint*)(buffer + UidOffset);
        return true;
    }

    /// <summary>Whether <paramref name="path"/> (its target, if a link) is a regular file; true where this cannot be told.</summary>
    public static bool IsRegularFile(string path) => !TryStat(path, followLink: true, out var mode, out _) || (mode & TypeMask) == Regular;

    /// <summary>Whether <paramref name="path"/> itself is a socket; false where this cannot be told (nothing is taken for a stale socket).</summary>
    public static bool IsSocket(string path) => TryStat(path, followLink: false, out var mode, out _) && (mode & TypeMask) == Socket;

    /// <summary>The owner's uid of <paramref name="path"/> (its target, if a link), or null where it cannot be told.</summary>
    public static uint? Owner(string path) => TryStat(path, followLink: true, out _, out var owner) ? owner : null;
}
