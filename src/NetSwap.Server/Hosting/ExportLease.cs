using NetSwap.Server.Exports;

namespace NetSwap.Server.Hosting;

/// <summary>
/// What attaching an export holds for one connection: its backend (a swap area, or a file export's handle) and the
/// connection's place in max-clients-per-export. <see cref="Release"/> gives both back, once, whichever way the
/// connection ends: in the handshake (the client left before it heard of the export), or after transmission. It is
/// the only place that does, so neither can be given back twice or forgotten on one path.
/// </summary>
internal sealed class ExportLease(Access.AdmissionGate gate, string countedExport, BlockBackend backend) : IDisposable
{
    private int _released;

    public BlockBackend Backend { get; } = backend;

    /// <summary>
    /// Gives the backend and the per-export place back. <paramref name="cleanDisconnect"/>: the client ended with
    /// NBD_CMD_DISC, or never reached transmission (nothing to keep for it); otherwise a swap area waits out its grace.
    /// </summary>
    public void Release(bool cleanDisconnect)
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            try
            {
                Backend.Release(cleanDisconnect);
            }
            finally
            {
                gate.LeaveExport(countedExport);
            }
        }
    }

    /// <summary>The client never reached transmission: nothing to keep for it.</summary>
    public void Dispose() => Release(cleanDisconnect: true);
}
