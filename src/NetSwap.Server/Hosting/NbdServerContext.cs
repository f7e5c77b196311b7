using Microsoft.Extensions.Logging;
using NetSwap.Server.Exports;

namespace NetSwap.Server.Hosting;

/// <summary>What every connection of one server shares: exports, limits, logging and the shutdown signal.</summary>
internal sealed class NbdServerContext
{
    private long _nextConnectionId;
    private volatile bool _shuttingDown;

    public NbdServerContext(IExportCatalog exports, NbdServerOptions options, ILogger logger)
    {
        Exports = exports;
        Options = options;
        Logger = logger;
    }

    public IExportCatalog Exports { get; }
    public NbdServerOptions Options { get; }
    public ILogger Logger { get; }

    /// <summary>Set once at SIGTERM: options are answered NBD_REP_ERR_SHUTDOWN and requests NBD_ESHUTDOWN from then on.</summary>
    public bool ShuttingDown => _shuttingDown;

    public void BeginShutdown() => _shuttingDown = true;

    public long NextConnectionId() => Interlocked.Increment(ref _nextConnectionId);
}
