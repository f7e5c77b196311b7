using System.Runtime.InteropServices;

namespace NetSwap.Server.Hosting;

/// <summary>What kind of file a path names, without following a symbolic link (lstat): .NET does not say "socket".</summary>
internal static unsafe partial class FileKind
{
    private const uint TypeMask = 0xF000;
    private const uint Socket = 0xC000;
    // struct stat on x86-64: st_dev (8), st_ino (8), st_nlink (8), then st_mode (4); 144 bytes in all.
    private const int ModeOffset = 24;
    private const int StatSize = 144;

    private const uint Regular = 0x8000;

    [LibraryImport("libc", EntryPoint = "lstat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int LStat(string path, byte* buffer);

    [LibraryImport("libc", EntryPoint = "stat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Stat(string path, byte* buffer);

    /// <summary>Whether <paramref name="path"/> (its target, if a link) is a regular file; true where this cannot be told.</summary>
    public static bool IsRegularFile(string path)
    {
        if (RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return true;
        }
        var buffer = stackalloc byte[StatSize];
        return Stat(path, buffer) != 0 || (*(uint*)(buffer + ModeOffset) & TypeMask) == Regular;
    }

    public static bool IsSocket(string path)
    {
        if (RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            // Layout known for x86-64 only: elsewhere nothing is taken for a stale socket (nothing deleted).
            return false;
        }
        var buffer = stackalloc byte[StatSize];
        if (LStat(path, buffer) != 0)
        {
            return false;
        }
        return (*(uint*)(buffer + ModeOffset) & TypeMask) == Socket;
    }
}
