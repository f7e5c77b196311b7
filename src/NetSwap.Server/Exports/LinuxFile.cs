using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace NetSwap.Server.Exports;

/// <summary>
/// The few Linux file calls .NET does not expose with errno intact. Every method returns 0 or a positive errno;
/// callers map it to an NBD error and log the errno itself.
/// </summary>
internal static partial class LinuxFile
{
    public const int EPERM = 1;
    public const int EIO = 5;
    public const int EBADF = 9;
    public const int EINVAL = 22;
    public const int EFBIG = 27;
    public const int ENOSPC = 28;
    public const int EROFS = 30;
    public const int ENXIO = 6;
    public const int EOPNOTSUPP = 95;
    public const int EDQUOT = 122;
    public const int EINTR = 4;
    public const int ENODEV = 19;

    public const int FallocKeepSize = 0x01;
    public const int FallocPunchHole = 0x02;
    public const int FallocZeroRange = 0x10;

    private const int SeekEnd = 2;
    private const int SeekData = 3;
    private const int SeekHole = 4;
    private const int PosixFadvWillNeed = 3;

    [LibraryImport("libc", EntryPoint = "pread64", SetLastError = true)]
    private static unsafe partial nint PRead(SafeFileHandle fd, byte* buffer, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "pwrite64", SetLastError = true)]
    private static unsafe partial nint PWrite(SafeFileHandle fd, byte* buffer, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "preadv2", SetLastError = true)]
    private static unsafe partial nint PReadV2(SafeFileHandle fd, IoVec* vectors, int count, long offset, int flags);

    [StructLayout(LayoutKind.Sequential)]
    private unsafe struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    private const int RwfNoWait = 0x08;
    public const int EAGAIN = 11;

    [LibraryImport("libc", EntryPoint = "splice", SetLastError = true)]
    private static unsafe partial nint Splice(SafeHandle input, long* inputOffset, SafeHandle output, long* outputOffset, nuint length, uint flags);

    private const uint SpliceMove = 1;

    /// <summary>
    /// Moves <paramref name="length"/> bytes from a pipe (which holds at least that many) into the file at
    /// <paramref name="offset"/>: splice(2), the kernel's own copy from the pipe's pages into the file's. Returns 0 or
    /// an errno; <paramref name="moved"/> says how many bytes left the pipe (all of them on success).
    /// </summary>
    public static unsafe int SpliceExactly(SafeHandle pipe, SafeFileHandle fd, long offset, int length, out int moved)
    {
        moved = 0;
        while (moved < length)
        {
            var at = offset + moved;
            var n = Splice(pipe, null, fd, &at, (nuint)(length - moved), SpliceMove);
            if (n < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == EINTR)
                {
                    continue;
                }
                // EAGAIN: the (non-blocking) pipe ran dry before the payload's end, as a 0 would say of a blocking one.
                return errno == EAGAIN ? EIO : errno;
            }
            if (n == 0)
            {
                // The pipe ran dry before the payload's end: a caller's bug, reported as an I/O error, never a hang.
                return EIO;
            }
            moved += (int)n;
        }
        return 0;
    }

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int FDataSync(SafeFileHandle fd);

    [LibraryImport("libc", EntryPoint = "fallocate64", SetLastError = true)]
    private static partial int FAllocate(SafeFileHandle fd, int mode, long offset, long length);

    [LibraryImport("libc", EntryPoint = "lseek64", SetLastError = true)]
    private static partial long LSeek(SafeFileHandle fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "posix_fadvise64")]
    private static partial int PosixFAdvise(SafeFileHandle fd, long offset, long length, int advice);

    /// <summary>
    /// Whether a read of the range would be served from the page cache without waiting for storage: one byte of its first
    /// and of its last page read with RWF_NOWAIT. A file system that cannot tell (EOPNOTSUPP, as tmpfs on some kernels)
    /// is memory anyway: yes.
    /// </summary>
    public static unsafe bool LikelyCached(SafeFileHandle fd, long offset, int length)
    {
        byte probe;
        var vector = new IoVec { Base = &probe, Length = 1 };
        foreach (var at in length > 4096 ? stackalloc long[] { offset, offset + length - 1 } : stackalloc long[] { offset })
        {
            if (PReadV2(fd, &vector, 1, at, RwfNoWait) < 0 && Marshal.GetLastPInvokeError() == EAGAIN)
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>Reads exactly <paramref name="buffer"/>.Length bytes; a read past the end of file is zeros (a short file).</summary>
    public static unsafe int ReadExactly(SafeFileHandle fd, Span<byte> buffer, long offset)
    {
        fixed (byte* start = buffer)
        {
            var errno = Transfer(fd, start, buffer.Length, offset, write: false, out var done);
            if (errno == EndOfFile)
            {
                // The file shrank under us: what lies beyond its end reads as zeros, never as stale buffer bytes.
                buffer[done..].Clear();
                return 0;
            }
            return errno;
        }
    }

    public static unsafe int WriteExactly(SafeFileHandle fd, ReadOnlySpan<byte> data, long offset)
    {
        fixed (byte* start = data)
        {
            var errno = Transfer(fd, start, data.Length, offset, write: true, out _);
            return errno == EndOfFile ? ENOSPC : errno;
        }
    }

    // Transfer's result when the file took or gave no more bytes (not an errno: those are positive).
    private const int EndOfFile = -1;

    /// <summary>pread or pwrite until <paramref name="length"/> bytes moved, retried on EINTR: 0, an errno, or <see cref="EndOfFile"/>.</summary>
    private static unsafe int Transfer(SafeFileHandle fd, byte* start, int length, long offset, bool write, out int done)
    {
        done = 0;
        while (done < length)
        {
            var n = write ? PWrite(fd, start + done, (nuint)(length - done), offset + done) : PRead(fd, start + done, (nuint)(length - done), offset + done);
            if (n < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == EINTR)
                {
                    continue;
                }
                return errno;
            }
            if (n == 0)
            {
                return EndOfFile;
            }
            done += (int)n;
        }
        return 0;
    }

    public static int DataSync(SafeFileHandle fd) => FDataSync(fd) == 0 ? 0 : Marshal.GetLastPInvokeError();

    public static int Allocate(SafeFileHandle fd, int mode, long offset, long length) =>
        FAllocate(fd, mode, offset, length) == 0 ? 0 : Marshal.GetLastPInvokeError();

    public static void AdviseWillNeed(SafeFileHandle fd, long offset, long length) => _ = PosixFAdvise(fd, offset, length, PosixFadvWillNeed);

    [LibraryImport("libc", EntryPoint = "fstatfs", SetLastError = true)]
    private static unsafe partial int FStatFs(SafeFileHandle fd, byte* buffer);

    [LibraryImport("libc", EntryPoint = "fstat", SetLastError = true)]
    private static unsafe partial int FStat(SafeFileHandle fd, byte* buffer);

    private const long TmpfsMagic = 0x01021994;
    private const long RamfsMagic = 0x858458F6;

    /// <summary>
    /// Whether the file lives in memory (tmpfs, ramfs): writing to it never waits for a disk or for writeback. A block
    /// device is never in memory, though its node sits on devtmpfs. The structures are read at their x86-64 offsets
    /// (statfs.f_type at 0, stat.st_mode at 24); elsewhere the answer is false, the safe one (writes may wait).
    /// </summary>
    public static unsafe bool IsMemoryBacked(SafeFileHandle fd)
    {
        if (RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return false;
        }
        var buffer = stackalloc byte[256];
        if (FStat(fd, buffer) != 0 || (*(uint*)(buffer + 24) & 0xF000) == 0x6000 /* S_IFBLK */)
        {
            return false;
        }
        return FStatFs(fd, buffer) == 0 && *(long*)buffer is TmpfsMagic or RamfsMagic;
    }

    /// <summary>Size of a regular file or a block device alike.</summary>
    public static long SizeOf(SafeFileHandle fd)
    {
        var end = LSeek(fd, 0, SeekEnd);
        return end < 0 ? throw new IOException($"cannot determine size (errno {Marshal.GetLastPInvokeError()})") : end;
    }

    /// <summary>
    /// The first offset at or after <paramref name="offset"/> that holds data, capped at <paramref name="limit"/>
    /// (limit: only holes up to there). Only SEEK_DATA is used: SEEK_HOLE scans to the end of a fully written tmpfs
    /// file (about 1 ms for 256 MiB), which would cost more than the hole saves. False: the file system cannot tell.
    /// </summary>
    public static bool TryFindData(SafeFileHandle fd, long offset, long limit, out long dataStart)
    {
        dataStart = offset;
        var data = LSeek(fd, offset, SeekData);
        if (data >= 0)
        {
            dataStart = Math.Min(data, limit);
            return true;
        }
        // ENXIO: no data at or after offset: the rest of the file is a hole.
        if (Marshal.GetLastPInvokeError() == ENXIO)
        {
            dataStart = limit;
            return true;
        }
        return false;
    }

    /// <summary>
    /// The first offset at or after <paramref name="offset"/> where a hole starts (the end of the file counts as one),
    /// capped at <paramref name="limit"/>. False: the file system cannot tell.
    /// </summary>
    public static bool TryFindHole(SafeFileHandle fd, long offset, long limit, out long holeStart)
    {
        var hole = LSeek(fd, offset, SeekHole);
        holeStart = hole >= 0 ? Math.Min(hole, limit) : limit;
        return hole >= 0;
    }
}
