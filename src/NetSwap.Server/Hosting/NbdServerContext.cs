using Microsoft.Extensions.Logging;
using NetSwap.Server.Access;
using NetSwap.Server.Exports;

namespace NetSwap.Server.Hosting;

/// <summary>What every connection of one server shares: exports, limits, logging and the shutdown signal.</summary>
internal sealed class NbdServerContext
{
    private long _nextConnectionId;
    private volatile bool _shuttingDown;

    public NbdServerContext(IExportCatalog exports, NbdServerOptions options, ILogger logger, AccessPolicy? policy = null)
    {
        Exports = exports;
        Options = options;
        Logger = logger;
        Gate = new AdmissionGate(policy ?? AccessPolicy.AllowAll);
        TotalBandwidth = new TokenBucket(Gate.Policy.Limits.BandwidthTotal, Math.Max(Gate.Policy.Limits.BandwidthTotal / 10, 1));
        PayloadMemory = new Transport.ByteBudget(options.PayloadMemoryBytes);
    }

    /// <summary>Every admission rule: who may connect, to what, how many at once.</summary>
    public AdmissionGate Gate { get; }

    /// <summary>The access rules and limits in force (the gate's).</summary>
    public AccessPolicy Policy
    {
        get => Gate.Policy;
        set => Reload(value, Gate.Tls);
    }

    /// <summary>SIGHUP: new access rules, limits and TLS rules, in force together; the total bandwidth cap follows.</summary>
    public void Reload(AccessPolicy policy, Tls.TlsConfiguration tls)
    {
        Gate.Replace(policy, tls);
        TotalBandwidth.Update(policy.Limits.BandwidthTotal, Math.Max(policy.Limits.BandwidthTotal / 10, 1));
    }

    /// <summary>The server-wide payload allowance (payload-memory); every connection's own budget comes on top of it.</summary>
    public Transport.ByteBudget PayloadMemory { get; }

    /// <summary>TLS credentials and rules in force (the gate's).</summary>
    public Tls.TlsConfiguration Tls
    {
        get => Gate.Tls;
        set => Gate.Tls = value;
    }
    public TokenBucket TotalBandwidth { get; }

    /// <summary>Whether writes to disk-backed files are being throttled by the kernel right now (see WriteStalls).</summary>
    public Transmission.WriteStalls WriteStalls { get; } = new();

    public IExportCatalog Exports { get; }
    public NbdServerOptions Options { get; }
    public ILogger Logger { get; }

    /// <summary>Set once at SIGTERM: options are answered NBD_REP_ERR_SHUTDOWN and requests NBD_ESHUTDOWN from then on.</summary>
    public bool ShuttingDown => _shuttingDown;

    public void BeginShutdown() => _shuttingDown = true;

    public long NextConnectionId() => Interlocked.Increment(ref _nextConnectionId);
}
