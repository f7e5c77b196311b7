using Microsoft.Win32.SafeHandles;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Server.Exports;

/// <summary>A regular file or a block device, read and written with pread/pwrite at any offset.</summary>
internal class FileBackend : BlockBackend
{
    // Zeros written when the file system cannot punch or zero a range; shared and never written to.
    private static readonly byte[] s_zeros = new byte[64 * 1024];

    private readonly SafeFileHandle _handle;
    private readonly bool _ownsHandle;
    private readonly long _size;
    private readonly bool _readOnly;
    private readonly bool _multiConn;
    // Set once the file system has said it cannot punch holes or zero ranges, so later requests skip the failed call.
    private volatile bool _noPunch;
    private volatile bool _noZeroRange;
    private volatile bool _noSplice;

    public FileBackend(SafeFileHandle handle, long size, bool readOnly, bool multiConn, bool ownsHandle = true)
    {
        _handle = handle;
        _size = size;
        _readOnly = readOnly;
        _multiConn = multiConn;
        _ownsHandle = ownsHandle;
        _memoryBacked = LinuxFile.IsMemoryBacked(handle);
    }

    // On tmpfs or ramfs: nothing read or written there waits for a disk.
    private readonly bool _memoryBacked;

    /// <summary>True unless the file is on tmpfs or ramfs.</summary>
    public override bool WritesMayWait => !_memoryBacked;

    public SafeFileHandle Handle => _handle;
    public override long Size => _size;
    public override bool IsReadOnly => _readOnly;
    public override bool CanMultiConn => _multiConn;

    public static FileBackend Open(string path, bool readOnly)
    {
        var handle = File.OpenHandle(path, FileMode.Open, readOnly ? FileAccess.Read : FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
        try
        {
            return new FileBackend(handle, LinuxFile.SizeOf(handle), readOnly, multiConn: true);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public override int Read(long offset, Span<byte> destination) => LinuxFile.ReadExactly(_handle, destination, offset);

    public override System.Runtime.InteropServices.SafeHandle? DirectFile => _handle;

    public override int Write(long offset, ReadOnlySpan<byte> data, bool fua) =>
        Written(offset, data.Length, Synced(LinuxFile.WriteExactly(_handle, data, offset), fua));

    public override bool TakesSplice => !_noSplice && !_readOnly;

    public override int WriteFromPipe(long offset, System.Runtime.InteropServices.SafeHandle pipe, int length, bool fua, out int moved)
    {
        var errno = LinuxFile.SpliceExactly(pipe, _handle, offset, length, out moved);
        if (errno == LinuxFile.EINVAL && moved == 0)
        {
            _noSplice = true;
            return errno;
        }
        return Written(offset, moved, Synced(errno, fua));
    }

    private int Synced(int errno, bool fua) => errno != 0 || !fua ? errno : LinuxFile.DataSync(_handle);

    /// <summary>Told of every write that reached the file: where, how many bytes, and its errno, which it returns.</summary>
    protected virtual int Written(long offset, int length, int errno) => errno;

    public override int Flush() => LinuxFile.DataSync(_handle);

    public override int Trim(long offset, long length, bool fua)
    {
        // TRIM is a hint (spec): where holes cannot be punched, doing nothing is a correct answer.
        if (!_noPunch)
        {
            var errno = LinuxFile.Allocate(_handle, LinuxFile.FallocPunchHole | LinuxFile.FallocKeepSize, offset, length);
            if (errno is LinuxFile.EOPNOTSUPP or LinuxFile.ENODEV)
            {
                _noPunch = true;
            }
            else if (errno != 0)
            {
                return errno;
            }
        }
        return fua ? LinuxFile.DataSync(_handle) : 0;
    }

    public override int WriteZeroes(long offset, long length, bool mayPunch, bool fast, bool fua)
    {
        var errno = ZeroRange(offset, length, mayPunch);
        if (errno == LinuxFile.EOPNOTSUPP)
        {
            if (fast)
            {
                return LinuxFile.EOPNOTSUPP;
            }
            errno = WriteZeroBuffers(offset, length);
        }
        return errno != 0 || !fua ? errno : LinuxFile.DataSync(_handle);
    }

    /// <summary>Zeroes a range without writing data: a punched hole where allowed, else FALLOC_FL_ZERO_RANGE.</summary>
    protected int ZeroRange(long offset, long length, bool mayPunch)
    {
        if (mayPunch && !_noPunch)
        {
            var errno = LinuxFile.Allocate(_handle, LinuxFile.FallocPunchHole | LinuxFile.FallocKeepSize, offset, length);
            if (errno is not (LinuxFile.EOPNOTSUPP or LinuxFile.ENODEV))
            {
                return errno;
            }
            _noPunch = true;
        }
        if (!_noZeroRange)
        {
            var errno = LinuxFile.Allocate(_handle, LinuxFile.FallocZeroRange | LinuxFile.FallocKeepSize, offset, length);
            if (errno is not (LinuxFile.EOPNOTSUPP or LinuxFile.ENODEV))
            {
                return errno;
            }
            _noZeroRange = true;
        }
        return LinuxFile.EOPNOTSUPP;
    }

    private int WriteZeroBuffers(long offset, long length)
    {
        while (length > 0)
        {
            var n = (int)Math.Min(length, s_zeros.Length);
            var errno = LinuxFile.WriteExactly(_handle, s_zeros.AsSpan(0, n), offset);
            if (errno != 0)
            {
                return errno;
            }
            offset += n;
            length -= n;
        }
        return 0;
    }

    public override void Cache(long offset, long length) => LinuxFile.AdviseWillNeed(_handle, offset, length);

    /// <summary>
    /// A file on tmpfs or ramfs is memory: no probe (on this kernel tmpfs answers the RWF_NOWAIT probe with EOPNOTSUPP,
    /// a system call per read spent to learn nothing). Elsewhere one byte of the first and last page is probed.
    /// </summary>
    public override bool IsInMemory(long offset, int length) => _memoryBacked || LinuxFile.LikelyCached(_handle, offset, length);

    public override bool TryFindData(long offset, long limit, out long dataStart) =>
        LinuxFile.TryFindData(_handle, offset, limit, out dataStart);

    /// <summary>Holes and data as the file system keeps them (SEEK_DATA, SEEK_HOLE); a hole reads as zeroes.</summary>
    public override void DescribeAllocation(long offset, long length, int maxExtents, List<NbdBlockDescriptor> extents)
    {
        var end = offset + length;
        var position = offset;
        while (position < end && extents.Count < maxExtents)
        {
            if (!LinuxFile.TryFindData(_handle, position, end, out var dataStart))
            {
                // The file system cannot tell: the rest is data, as far as anyone knows.
                extents.Add(new((uint)(end - position), NbdAllocationFlags.None));
                return;
            }
            if (dataStart > position)
            {
                extents.Add(new((uint)(dataStart - position), NbdAllocationFlags.Hole | NbdAllocationFlags.Zero));
                position = dataStart;
                continue;
            }
            var holeStart = LinuxFile.TryFindHole(_handle, position, end, out var hole) && hole > position ? hole : end;
            extents.Add(new((uint)(holeStart - position), NbdAllocationFlags.None));
            position = holeStart;
        }
    }

    public override void Dispose()
    {
        if (_ownsHandle)
        {
            _handle.Dispose();
        }
        GC.SuppressFinalize(this);
    }
}
