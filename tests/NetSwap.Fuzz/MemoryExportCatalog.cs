using NetSwap.Server.Exports;
using NetSwap.Server.Hosting;

namespace NetSwap.Fuzz;

/// <summary>
/// One export named "faulty", held in memory, whose storage fails with EIO in a chosen range as a dying disk does, and
/// which cannot zero quickly. Only the storage is simulated: everything above the backend (validation, replies, logging)
/// is the real server. Used by the fuzz target (no disk I/O per input) and by the tests of error paths; tests of how
/// writes are scheduled can make it pose as a disk (<paramref name="writesMayWait"/>), or as a sparse swap area whose
/// first write into each 128 KiB allocates (<paramref name="sparse"/>), and watch each write (<paramref name="onWrite"/>).
/// </summary>
internal sealed class MemoryExportCatalog : IExportCatalog, IDisposable
{
    private readonly FaultyExport _export;

    public MemoryExportCatalog(long size, long badStart, long badEnd, bool writesMayWait = false, Action? onWrite = null, bool sparse = false) =>
        _export = new FaultyExport(size, badStart, badEnd, writesMayWait, onWrite, sparse);

    public ExportLookup Lookup(string name, ConnectionInfo client) =>
        name == "faulty" ? ExportLookup.Found(_export) : ExportLookup.Refused(NetSwap.Protocol.Nbd.NbdOptionReplyType.ErrUnknown, "unknown");

    public IEnumerable<ExportOffer> List(ConnectionInfo client) => [_export];

    public void Dispose()
    {
    }

    private sealed class FaultyExport(long size, long badStart, long badEnd, bool writesMayWait, Action? onWrite, bool sparse) : ExportOffer
    {
        public override string Name => "faulty";
        public override string? Description => null;
        public override long Size => size;
        public override bool IsReadOnly => false;
        public override bool CanMultiConn => false;
        public override ValueTask<ExportLookup> AttachAsync(AttachContext context) => ValueTask.FromResult(ExportLookup.Attached(this, new FaultyBackend(size, badStart, badEnd, writesMayWait, onWrite, sparse)));
    }

    private sealed class FaultyBackend(long size, long badStart, long badEnd, bool writesMayWait, Action? onWrite, bool sparse) : BlockBackend
    {
        private readonly byte[] _data = new byte[size];
        // sparse: which 128 KiB pieces were written (one request at a time touches a piece in these tests).
        private readonly bool[] _written = new bool[(size >> 17) + 1];

        public override bool WouldAllocate(long offset, int length)
        {
            for (var piece = offset >> 17; sparse && piece <= (offset + length - 1) >> 17; piece++)
            {
                if (!Volatile.Read(ref _written[piece]))
                {
                    return true;
                }
            }
            return false;
        }

        public override long Size => size;
        public override bool WritesMayWait => writesMayWait;
        public override bool IsReadOnly => false;
        public override bool CanMultiConn => false;

        private bool Bad(long offset, long length) => offset < badEnd && offset + length > badStart;

        public override int Read(long offset, Span<byte> destination)
        {
            if (Bad(offset, destination.Length))
            {
                return LinuxFile.EIO;
            }
            _data.AsSpan((int)offset, destination.Length).CopyTo(destination);
            return 0;
        }

        public override int Write(long offset, ReadOnlySpan<byte> data, bool fua)
        {
            onWrite?.Invoke();
            if (Bad(offset, data.Length))
            {
                return LinuxFile.EIO;
            }
            data.CopyTo(_data.AsSpan((int)offset));
            for (var piece = offset >> 17; piece <= (offset + data.Length - 1) >> 17; piece++)
            {
                Volatile.Write(ref _written[piece], true);
            }
            return 0;
        }

        public override int Flush() => 0;
        public override int Trim(long offset, long length, bool fua) => 0;
        public override int WriteZeroes(long offset, long length, bool mayPunch, bool fast, bool fua) => fast ? LinuxFile.EOPNOTSUPP : 0;
        public override void Cache(long offset, long length) { }
        public override bool TryFindData(long offset, long limit, out long dataStart)
        {
            dataStart = offset;
            return false;
        }
        public override void Dispose() { }
    }
}
