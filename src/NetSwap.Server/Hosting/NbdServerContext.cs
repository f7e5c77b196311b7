using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using NetSwap.Server.Access;
using NetSwap.Server.Exports;

namespace NetSwap.Server.Hosting;

/// <summary>What every connection of one server shares: exports, limits, logging and the shutdown signal.</summary>
internal sealed class NbdServerContext
{
    private long _nextConnectionId;
    private volatile bool _shuttingDown;
    private volatile AccessPolicy _policy;
    private readonly ConcurrentDictionary<string, int> _clientsPerExport = new(StringComparer.Ordinal);

    public NbdServerContext(IExportCatalog exports, NbdServerOptions options, ILogger logger, AccessPolicy? policy = null)
    {
        Exports = exports;
        Options = options;
        Logger = logger;
        _policy = policy ?? AccessPolicy.AllowAll;
        Limiter = new ConnectionLimiter(_policy.Limits);
        TotalBandwidth = new TokenBucket(_policy.Limits.BandwidthTotal, Math.Max(_policy.Limits.BandwidthTotal / 10, 1));
        PayloadMemory = new Transport.ByteBudget(options.PayloadMemoryBytes);
    }

    /// <summary>The access rules and limits in force; replaced whole on SIGHUP.</summary>
    public AccessPolicy Policy
    {
        get => _policy;
        set
        {
            _policy = value;
            Limiter.Update(value.Limits);
            TotalBandwidth.Update(value.Limits.BandwidthTotal, Math.Max(value.Limits.BandwidthTotal / 10, 1));
        }
    }

    public ConnectionLimiter Limiter { get; }

    /// <summary>The server-wide payload allowance (payload-memory); every connection's own budget comes on top of it.</summary>
    public Transport.ByteBudget PayloadMemory { get; }

    /// <summary>TLS credentials and rules in force; replaced whole on SIGHUP.</summary>
    public Tls.TlsConfiguration Tls { get; set; } = NetSwap.Server.Tls.TlsConfiguration.Disabled;
    public TokenBucket TotalBandwidth { get; }

    /// <summary>Whether writes to disk-backed files are being throttled by the kernel right now (see WriteStalls).</summary>
    public Transmission.WriteStalls WriteStalls { get; } = new();

    /// <summary>Counts a client into an export; false (and nothing counted) when max-clients-per-export is reached.</summary>
    public bool TryEnterExport(string export)
    {
        var max = _policy.Limits.MaxClientsPerExport;
        while (true)
        {
            var current = _clientsPerExport.GetOrAdd(export, 0);
            if (max > 0 && current >= max)
            {
                return false;
            }
            if (_clientsPerExport.TryUpdate(export, current + 1, current))
            {
                return true;
            }
        }
    }

    public void LeaveExport(string export) => _clientsPerExport.AddOrUpdate(export, 0, static (_, n) => Math.Max(0, n - 1));

    public IExportCatalog Exports { get; }
    public NbdServerOptions Options { get; }
    public ILogger Logger { get; }

    /// <summary>Set once at SIGTERM: options are answered NBD_REP_ERR_SHUTDOWN and requests NBD_ESHUTDOWN from then on.</summary>
    public bool ShuttingDown => _shuttingDown;

    public void BeginShutdown() => _shuttingDown = true;

    public long NextConnectionId() => Interlocked.Increment(ref _nextConnectionId);
}
