namespace NetSwap.Server.Hosting;

/// <summary>Limits of one server instance. Every value has a safe default and is logged at start.</summary>
internal sealed class NbdServerOptions
{
    /// <summary>Time a client has from connect to the end of option haggling.</summary>
    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(10);
    /// <summary>Requests one connection may have in flight; further requests wait in the socket.</summary>
    public int MaxRequestsInFlight { get; set; } = 64;
    /// <summary>Payload buffer one connection may hold at once, however large its requests.</summary>
    public int ConnectionBufferBytes { get; set; } = 1024 * 1024;
    /// <summary>
    /// Payload buffer all connections together may hold at once (payload-memory): a request waits for its share, so a
    /// thousand clients that stop half-way through their payloads hold this much at most, not a thousand budgets.
    /// </summary>
    public int PayloadMemoryBytes { get; set; } = 256 * 1024 * 1024;
    /// <summary>After SIGTERM, how long requests in flight may take before connections are cut.</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(5);
    /// <summary>
    /// How long a reply write may wait while the client's TCP acknowledges nothing new: a client that stops reading its
    /// replies is cut after this, with its area kept for grace as after any lost connection (send-timeout). Over streams
    /// with no TCP socket of ours under them (in-memory pipes, the NetworkStream fallback) a whole write (at most
    /// 256 KiB) must finish in that time.
    /// </summary>
    public TimeSpan SendTimeout { get; set; } = TimeSpan.FromSeconds(30);
    /// <summary>
    /// How long the rest of a request already begun (the header's remaining bytes, a WRITE's payload) may stop arriving
    /// before the connection is cut (payload-timeout). A payload that keeps arriving, however slowly, is never cut.
    /// </summary>
    public TimeSpan PayloadTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Whether WRITE payloads of 64 KiB to 256 KiB on plain TCP wait in kernel pipes (splice) rather than in the
    /// server's buffers, where the export's file takes splice (payload-pipes). Counted against the same budgets.
    /// </summary>
    public bool PayloadPipes { get; set; } = true;
    public TcpTuning Tcp { get; } = new();

    /// <summary>
    /// A fault seam for tests: awaited by every reply right after it has taken the connection's reply writer, so a test
    /// can hold the writer while the receive loop goes on (null in production).
    /// </summary>
    internal Func<ValueTask>? ReplyWriterHeld { get; set; }
}

/// <summary>TCP settings applied to every accepted socket, so a vanished peer surfaces as a socket error in bounded time.</summary>
internal sealed class TcpTuning
{
    /// <summary>Idle time before the first keepalive probe.</summary>
    public TimeSpan KeepAliveTime { get; set; } = TimeSpan.FromSeconds(30);
    public TimeSpan KeepAliveInterval { get; set; } = TimeSpan.FromSeconds(10);
    public int KeepAliveCount { get; set; } = 3;
    /// <summary>TCP_USER_TIMEOUT: unacknowledged data older than this kills the connection (0: kernel default).</summary>
    public TimeSpan UserTimeout { get; set; } = TimeSpan.FromSeconds(60);
}
