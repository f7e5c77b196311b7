using System.Diagnostics;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using NetSwap.Protocol.Nbd;
using NetSwap.Server.Exports;
using NetSwap.Server.Transmission;
using NetSwap.Server.Transport;

namespace NetSwap.Server.Hosting;

/// <summary>
/// One client, from accept to close, over any duplex stream (TCP, TLS, inetd stdin, an in-memory pipe).
/// The handshake is in NbdConnection.Handshake.cs, the transmission phase in NbdConnection.Transmission.cs.
/// </summary>
internal sealed partial class NbdConnection : IAsyncDisposable, IIdleWork
{
    private readonly NbdServerContext _context;
    private readonly ILogger _logger;
    // Replaced once, by the TLS stream, when the client sends NBD_OPT_STARTTLS (before any request is in flight).
    private Stream _stream;
    // The socket under _stream (under TLS too) when it is served by our event loops; null for other streams.
    private readonly ReactorStream? _transport;
    private NbdStreamReader _reader;
    private ReplyWriter _writer;
    // Cancelled to cut the connection: shutdown timeout, a failed write, a fatal read error.
    private readonly CancellationTokenSource _abort = new();
    private readonly long _startTimestamp = Stopwatch.GetTimestamp();
    private string _closeReason = "client closed the connection";
    // Set by Abort: the connection was cut on purpose (or by a failed reply); errors that follow are its echo.
    private volatile bool _aborted;
    // Set when the client ended with NBD_CMD_DISC: its swap area is destroyed at once rather than kept for a reconnect.
    private bool _cleanDisconnect;

    public NbdConnection(NbdServerContext context, Stream stream, string remoteAddress, System.Net.IPAddress? address = null)
    {
        _context = context;
        _logger = context.Logger;
        _stream = stream;
        _transport = stream as ReactorStream;
        _reader = new NbdStreamReader(stream);
        _writer = new ReplyWriter(stream, context.Options.ReplyWriterHeld);
        Info = new ConnectionInfo(context.NextConnectionId(), remoteAddress, address);
    }

    public ConnectionInfo Info { get; }
    public DateTimeOffset ConnectedAt { get; } = DateTimeOffset.UtcNow;
    /// <summary>The export in use once the handshake is over; null before.</summary>
    public string? ExportName => _session.Offer?.Name;
    public long ExportSize => _session.Lease?.Backend.Size ?? 0;
    public Exports.Swap.SwapArea? SwapArea => (_session.Lease?.Backend as Exports.Swap.SwapBackend)?.Area;
    public long Id => Info.Id;
    public string Client => Info.RemoteAddress;

    public async Task RunAsync(bool oldstyle = false)
    {
        ConnectionLog.Connected(_logger, Id, Client);
        ExportLease? lease = null;
        try
        {
            var negotiated = oldstyle ? await OldstyleHandshakeAsync() : await HandshakeAsync();
            if (negotiated is { } session)
            {
                lease = session.Lease;
                await TransmissionAsync(session);
            }
        }
        catch (NbdProtocolException e)
        {
            _closeReason = "protocol violation";
            ConnectionLog.ProtocolViolation(_logger, Id, Client, e.Message);
        }
        catch (Exception e) when (IsConnectionError(e))
        {
            // After Abort the receive loop fails because the stream was closed under it: Abort has said why.
            if (!_aborted)
            {
                _closeReason = "connection lost";
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
            ReleaseSpare();
            lease?.Release(_cleanDisconnect);
            await _stream.DisposeAsync();
            _reader.Dispose();
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
            // Closing the stream wakes a read that does not observe cancellation (some streams do not).
            _stream.Dispose();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    // The progress check's view of the client's reading (its thread only): bytes acknowledged at the last look, and when
    // that figure last moved.
    private long _ackedSeen = -1;
    private long _ackedAt;

    /// <summary>Whether a reply write is waiting for the client to take bytes (what send-timeout measures).</summary>
    internal bool IsWaitingToSend => _writer.WriteWaitingSince != 0;

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
        var writing = _writer.WriteWaitingSince;
        if (writing != 0 && _transport?.BytesAcked() is { } acked and >= 0)
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
        var reading = _reader.StalledSince;
        if (reading != 0 && Stopwatch.GetElapsedTime(reading, now) > options.PayloadTimeout)
        {
            ConnectionLog.StalledClient(_logger, Id, Client, "payload stopped arriving", options.PayloadTimeout.TotalSeconds);
            Abort("request stopped half-way (payload-timeout)");
        }
    }

    /// <summary>Socket resets, closed streams and cancellations after an abort are normal ends, not failures.</summary>
    private bool IsConnectionError(Exception e) => e switch
    {
        IOException or SocketException or ObjectDisposedException => true,
        OperationCanceledException => _abort.IsCancellationRequested,
        _ => false,
    };

    public async ValueTask DisposeAsync()
    {
        _abort.Dispose();
        _writer.Dispose();
        await _stream.DisposeAsync();
    }
}
