namespace NetSwap.Server.Exports;

/// <summary>
/// What one transmission phase reads and writes. Every operation returns 0 or a Linux errno (a value, not an
/// exception: a failed request is an NBD error reply, never the end of a connection).
/// Implementations are safe for concurrent calls: requests of one connection run in parallel.
/// </summary>
internal abstract class BlockBackend : IDisposable
{
    public abstract long Size { get; }
    public abstract bool IsReadOnly { get; }
    /// <summary>Every connection sees the same data and a flush on one covers writes made through another.</summary>
    public abstract bool CanMultiConn { get; }

    public abstract int Read(long offset, Span<byte> destination);
    public abstract int Write(long offset, ReadOnlySpan<byte> data, bool fua);
    public abstract int Flush();
    public abstract int Trim(long offset, long length, bool fua);
    /// <summary>With <paramref name="fast"/>, returns EOPNOTSUPP instead of writing zeros the slow way (NBD_CMD_FLAG_FAST_ZERO).</summary>
    public abstract int WriteZeroes(long offset, long length, bool mayPunch, bool fast, bool fua);
    public abstract void Cache(long offset, long length);

    /// <summary>Whether reading the range now would not wait for storage (it is in memory). False when unknown.</summary>
    public virtual bool IsInMemory(long offset, int length) => false;

    /// <summary>Whether a write may wait for storage (a disk, writeback); false for data held in memory.</summary>
    public virtual bool WritesMayWait => false;

    /// <summary>Whether WRITE data can go from a pipe straight into the backend's file: see <see cref="WriteFromPipe"/>.</summary>
    public virtual bool TakesSplice => false;

    /// <summary>
    /// Writes <paramref name="length"/> bytes that wait in <paramref name="pipe"/> at <paramref name="offset"/> (splice):
    /// 0 or an errno, and how many bytes left the pipe. EINVAL with none moved: the file cannot take splice after all,
    /// <see cref="TakesSplice"/> is false from then on, and the bytes are still in the pipe.
    /// </summary>
    public virtual int WriteFromPipe(long offset, System.Runtime.InteropServices.SafeHandle pipe, int length, bool fua, out int moved)
    {
        moved = 0;
        return LinuxFile.EINVAL;
    }

    /// <summary>Whether writing the range would first have to allocate storage for part of it (it holds a hole).</summary>
    public virtual bool WouldAllocate(long offset, int length) => false;

    /// <summary>
    /// A file whose bytes at the export's offsets are the export's data, so a read can be sent straight from it
    /// (sendfile); null when there is none. A read sent this way is reported with <see cref="OnDirectRead"/>.
    /// </summary>
    public virtual System.Runtime.InteropServices.SafeHandle? DirectFile => null;

    /// <summary>A read of <paramref name="length"/> bytes was sent from <see cref="DirectFile"/>.</summary>
    public virtual void OnDirectRead(int length)
    {
    }

    /// <summary>For structured reads: where data starts at or after offset (limit if none before it). False: unknown, treat as data.</summary>
    public abstract bool TryFindData(long offset, long limit, out long dataStart);

    /// <summary>
    /// base:allocation of [<paramref name="offset"/>, +<paramref name="length"/>): consecutive extents from offset on,
    /// at most <paramref name="maxExtents"/> of them (then they may stop short of the end). The default knows nothing
    /// of holes: all of it is data.
    /// </summary>
    public virtual void DescribeAllocation(long offset, long length, int maxExtents, List<NetSwap.Protocol.Nbd.NbdBlockDescriptor> extents) =>
        extents.Add(new((uint)length, NetSwap.Protocol.Nbd.NbdAllocationFlags.None));

    /// <summary>The connection is done with the backend; <paramref name="cleanDisconnect"/>: it ended with NBD_CMD_DISC.</summary>
    public virtual void Release(bool cleanDisconnect) => Dispose();

    public abstract void Dispose();
}
