using System.Diagnostics;
using Microsoft.Extensions.Logging;
using NetSwap.Protocol.Nbd;
using NetSwap.Server.Exports;
using NetSwap.Server.Handshake;
using NetSwap.Server.Transmission;
using NetSwap.Server.Transport;

namespace NetSwap.Server.Hosting;

/// <summary>
/// One client's connection, from accept to close, over any duplex stream (TCP, TLS, inetd stdin, an in-memory pipe):
/// accept → negotiate (<see cref="OptionNegotiator"/>) → transmit (<see cref="RequestLoop"/>) → close, with one
/// cancellation (<see cref="Abort"/>) and one clean-up path (the end of <see cref="RunAsync"/>). The bytes are the
/// <see cref="ConnectionChannel"/>'s; what the client was given is the session's lease, released here only.
/// </summary>
internal sealed class NbdConnection : IAsyncDisposable
{
    private readonly NbdServerContext _context;
    private readonly ILogger _logger;
    private readonly ConnectionChannel _channel;
    // Cancelled to cut the connection: shutdown timeout, a failed write, a fatal read error.
    private readonly CancellationTokenSource _abort = new();
    private readonly long _startTimestamp = Stopwatch.GetTimestamp();
    private string _closeReason = "client closed the connection";
    // Set by Abort: the connection was cut on purpose (or by a failed reply); errors that follow are its echo.
    private volatile bool _aborted;
    // What the handshake agreed, and the transmission phase running it; null until the client enters transmission.
    // Read by the status snapshot from other threads: a reference, published whole.
    private volatile NegotiatedSession? _session;
    private volatile RequestLoop? _requests;

    public NbdConnection(NbdServerContext context, Stream stream, string remoteAddress, System.Net.IPAddress? address = null)
    {
        _context = context;
        _logger = context.Logger;
        _channel = new ConnectionChannel(stream, context.Options.ReplyWriterHeld);
        Info = new ConnectionInfo(context.NextConnectionId(), remoteAddress, address);
    }

    public ConnectionInfo Info { get; }
    public DateTimeOffset ConnectedAt { get; } = DateTimeOffset.UtcNow;
    /// <summary>The export in use once the handshake is over; null before.</summary>
    public string? ExportName => _session?.Offer.Name;
    public long ExportSize => _session?.Backend.Size ?? 0;
    public Exports.Swap.SwapArea? SwapArea => (_session?.Backend as Exports.Swap.SwapBackend)?.Area;
    public long Id => Info.Id;
    public string Client => Info.RemoteAddress;

    public long BytesRead => _requests?.BytesRead ?? 0;
    public long BytesWritten => _requests?.BytesWritten ?? 0;

    /// <summary>Most payload buffer bytes this connection ever held at once (bounded by ConnectionBufferBytes).</summary>
    public int PeakPayloadBytes => _requests?.PeakPayloadBytes ?? 0;

    /// <summary>Buffer bytes held right now: payload buffers, the spare and the receive buffer. Zero for an idle connection.</summary>
    public int HeldBufferBytes => (_requests?.HeldPayloadBytes ?? 0) + (_channel.Reader.HoldsBuffer ? NbdStreamReader.BufferSize : 0);

    /// <summary>Completes when nothing is in flight and the receive loop has ended (or never started).</summary>
    public Task WhenIdleAsync() => _requests?.WhenIdleAsync() ?? Task.CompletedTask;

    /// <summary>True while requests are being executed; the server waits for these at shutdown.</summary>
    public bool HasRequestsInFlight => _requests?.HasRequestsInFlight ?? false;

    /// <summary>Whether a reply write is waiting for the client to take bytes (what send-timeout measures).</summary>
    internal bool IsWaitingToSend => _channel.Writer.WriteWaitingSince != 0;

    public async Task RunAsync(bool oldstyle = false)
    {
        ConnectionLog.Connected(_logger, Id, Client);
        try
        {
            var negotiator = new OptionNegotiator(_context, _channel, Info, reason => Abort(reason));
            _session = await negotiator.NegotiateAsync(oldstyle, _abort.Token);
            if (_session is not { } session)
            {
                _closeReason = negotiator.CloseReason;
                return;
            }
            var requests = new RequestLoop(_context, _channel, session, Info, _abort, Abort);
            _requests = requests;
            await requests.RunAsync();
            // A clean end of the loop says how the client left; an exception says it below.
            _closeReason = requests.CloseReason;
        }
        catch (NbdProtocolException e)
        {
            _closeReason = "protocol violation";
            ConnectionLog.ProtocolViolation(_logger, Id, Client, e.Message);
        }
        catch (Exception e) when (TransportException.IsConnectionEnd(e, _abort.Token))
        {
            // After Abort the receive loop fails because the stream was closed under it: Abort has said why.
            if (!_aborted)
            {
                _closeReason = TransportException.CloseReason(e);
                ConnectionLog.ConnectionError(_logger, Id, Client, e.Message);
            }
        }
        catch (Exception e)
        {
            _closeReason = "internal error";
            ConnectionLog.UnexpectedFailure(_logger, e, Id, Client);
        }
        finally
        {
            await _abort.CancelAsync();
            await WhenIdleAsync();
            _session?.Lease.Release(_requests?.CleanDisconnect ?? false);
            await _channel.DisposeAsync();
            ConnectionLog.Closed(_logger, Id, Client, Stopwatch.GetElapsedTime(_startTimestamp).TotalSeconds, _closeReason, BytesRead, BytesWritten);
        }
    }

    /// <summary>Cuts the connection now (server shutdown after its timeout, or a reply that could not be sent).</summary>
    public void Abort(string reason, Exception? cause = null)
    {
        if (cause is not null && !_aborted)
        {
            ConnectionLog.ConnectionError(_logger, Id, Client, cause.Message);
        }
        _closeReason = reason;
        _aborted = true;
        try
        {
            _abort.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
        _channel.Close();
    }

    // The progress check's view of the client's reading (its thread only): bytes acknowledged at the last look, and when
    // that figure last moved.
    private long _ackedSeen = -1;
    private long _ackedAt;

    /// <summary>
    /// Cuts a connection whose client has stopped holding up its end (called every 500 ms by the server): a reply
    /// write waiting while the client's TCP has acknowledged nothing new for send-timeout (over streams with no TCP
    /// socket of ours under them, a whole write must finish in that time), or a request begun whose rest has not
    /// advanced for payload-timeout. Idle connections are never cut here (keepalive finds dead peers among them).
    /// </summary>
    public void CheckProgress(long now)
    {
        if (_aborted)
        {
            return;
        }
        var options = _context.Options;
        var writing = _channel.Writer.WriteWaitingSince;
        if (writing != 0 && _channel.BytesAcked() is { } acked and >= 0)
        {
            // The client's TCP acknowledged more since the last look: it is reading, however slowly.
            if (acked != _ackedSeen)
            {
                (_ackedSeen, _ackedAt) = (acked, now);
            }
            writing = Math.Max(writing, _ackedAt);
        }
        if (writing != 0 && Stopwatch.GetElapsedTime(writing, now) > options.SendTimeout)
        {
            ConnectionLog.StalledClient(_logger, Id, Client, "replies made no progress", options.SendTimeout.TotalSeconds);
            Abort("client stopped reading its replies (send-timeout)");
            return;
        }
        var reading = _channel.Reader.StalledSince;
        if (reading != 0 && Stopwatch.GetElapsedTime(reading, now) > options.PayloadTimeout)
        {
            ConnectionLog.StalledClient(_logger, Id, Client, "payload stopped arriving", options.PayloadTimeout.TotalSeconds);
            Abort("request stopped half-way (payload-timeout)");
        }
    }

    public async ValueTask DisposeAsync()
    {
        _abort.Dispose();
        await _channel.DisposeAsync();
    }
}
