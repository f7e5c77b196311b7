using System.Net.Security;
using NetSwap.Server.Transmission;

namespace NetSwap.Server.Transport;

/// <summary>
/// A connection's bytes: the stream, the reader of requests and options, the writer of replies, and the STARTTLS
/// switch, done here in one step (as nbdkit swaps its recv and send functions) so that no one else holds a stream that
/// TLS has replaced. Under TLS the socket below still tells the request loop where it runs (<see cref="Loop"/>), but its
/// direct calls (gathered writes, sendfile, reads that never wait) are no longer offered: bytes must pass through TLS.
/// </summary>
internal sealed class ConnectionChannel : IAsyncDisposable
{
    private readonly ReactorStream? _socket;
    private readonly Func<ValueTask>? _writerHeld;
    private Stream _stream;

    public ConnectionChannel(Stream stream, Func<ValueTask>? writerHeld = null)
    {
        _stream = stream;
        _socket = stream as ReactorStream;
        _writerHeld = writerHeld;
        Reader = new NbdStreamReader(stream, _socket);
        Writer = new ReplyWriter(stream, _socket, writerHeld);
    }

    public NbdStreamReader Reader { get; private set; }

    /// <summary>The transmission phase's replies (all of them: framing lives there).</summary>
    public ReplyWriter Writer { get; private set; }

    /// <summary>The event loop serving this connection, or null when a thread-pool thread of its own reads it.</summary>
    public ILoopAffinity? Loop => _socket;

    /// <summary>Whether TLS is established (after NBD_OPT_STARTTLS); never undone for the life of the connection.</summary>
    public bool IsTls { get; private set; }

    /// <summary>Bytes the peer's TCP acknowledged so far, or null where there is no TCP socket of ours to ask (-1: it cannot say).</summary>
    public long? BytesAcked() => _socket?.BytesAcked();

    /// <summary>A handshake message (the handshake phase writes whole messages, one at a time).</summary>
    public ValueTask WriteAsync(ReadOnlyMemory<byte> message, CancellationToken cancellationToken) => _stream.WriteAsync(message, cancellationToken);

    /// <summary>
    /// From here waits for the client continue on the event loop's thread (the transmission phase never blocks
    /// except on storage it knows to be in memory); the handshake keeps them on the thread pool.
    /// </summary>
    public void EnterTransmission()
    {
        if (_socket is not null)
        {
            _socket.InlineCompletions = true;
        }
    }

    /// <summary>
    /// The server's side of the TLS handshake over this connection; on success every later read and write goes through
    /// TLS. On failure the connection is closed (after the STARTTLS reply it is too late to go on in the clear) and the
    /// exception says why.
    /// </summary>
    public async ValueTask<SslStream> StartTlsAsync(SslServerAuthenticationOptions options, CancellationToken cancellationToken)
    {
        var ssl = new SslStream(_stream, leaveInnerStreamOpen: false);
        try
        {
            await ssl.AuthenticateAsServerAsync(options, cancellationToken);
        }
        catch
        {
            await ssl.DisposeAsync();
            throw;
        }
        _stream = ssl;
        Reader.Dispose();
        Reader = new NbdStreamReader(ssl);
        Writer.Dispose();
        Writer = new ReplyWriter(ssl, socket: null, _writerHeld);
        IsTls = true;
        return ssl;
    }

    /// <summary>Closes the stream now: a read that does not observe cancellation (some streams do not) wakes and fails.</summary>
    public void Close()
    {
        try
        {
            _stream.Dispose();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        Writer.Dispose();
        Reader.Dispose();
        await _stream.DisposeAsync();
    }
}
