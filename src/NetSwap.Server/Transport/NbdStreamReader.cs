using System.Buffers;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Server.Transport;

/// <summary>
/// Reads NBD messages from any stream (TCP, TLS, inetd socket, in-memory pipe) with few system calls under pipelining.
/// Ownership: the receive buffer is rented only while bytes are buffered; when it runs empty it goes back to the pool and
/// the next wait is a zero-byte read, so an idle connection holds no buffer (as Kestrel does).
/// Not thread-safe: one reader per connection.
/// </summary>
internal sealed class NbdStreamReader : IDisposable
{
    public const int BufferSize = 16 * 1024;

    private readonly Stream _stream;
    // The plain socket under _stream, when there is one with nothing above it: reads that never wait.
    private readonly IDirectSocket? _socket;
    private byte[]? _buffer;
    private int _start;
    private int _end;
    // How far into _buffer bytes were ever received since it was rented: the part to clear when it goes back.
    private int _used;

    public NbdStreamReader(Stream stream, IDirectSocket? socket = null)
    {
        _stream = stream;
        _socket = socket;
    }

    public int Buffered => _end - _start;

    /// <summary>Whether a receive buffer is rented right now (never while the connection waits idle).</summary>
    public bool HoldsBuffer => _buffer is not null;

    /// <summary>
    /// Fills <paramref name="destination"/>. Returns false if the stream ended before the first byte (a clean end at a
    /// message boundary); an end in the middle is a truncated message and throws <see cref="NbdProtocolException"/>.
    /// While it waits in the middle of a message (<paramref name="begun"/>, or once its first byte has come) it keeps
    /// <see cref="StalledSince"/> at the time of its last progress, so a client that stops half-way can be cut.
    /// </summary>
    public async ValueTask<bool> TryReadExactlyAsync(Memory<byte> destination, CancellationToken cancellationToken, bool begun = false)
    {
        var total = CopyBuffered(destination.Span);
        if (total == destination.Length)
        {
            return true;
        }
        if (begun || total > 0)
        {
            Progress();
        }
        try
        {
            while (total < destination.Length)
            {
                var rest = destination[total..];
                int n;
                if (rest.Length >= BufferSize / 2 && Buffered == 0)
                {
                    // Large payloads go straight into the caller's memory: no double copy, no buffer.
                    n = await _stream.ReadAsync(rest, cancellationToken);
                }
                else
                {
                    n = await FillAsync(1, cancellationToken) ? CopyBuffered(rest.Span) : 0;
                }
                if (n == 0)
                {
                    return Finish(total, destination.Length);
                }
                total += n;
                Progress();
            }
            return true;
        }
        finally
        {
            Volatile.Write(ref _stalledSince, 0);
        }
    }

    public async ValueTask ReadExactlyAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        if (!await TryReadExactlyAsync(destination, cancellationToken, begun: true))
        {
            NbdProtocolException.Throw("connection closed in the middle of a message");
        }
    }

    /// <summary>Whether payloads can be moved into a pipe inside the kernel (a plain socket: nothing above it).</summary>
    public bool CanSplice => _socket is not null;

    /// <summary>
    /// Moves the next <paramref name="length"/> bytes into <paramref name="pipe"/>: what is buffered here is written
    /// into it, the rest spliced from the socket, waiting for it as <see cref="ReadExactlyAsync"/> does (and keeping
    /// <see cref="StalledSince"/> likewise). Returns how many bytes the pipe got: less than <paramref name="length"/> only
    /// when it was full (segments smaller than a page fill a pipe's slots early); the caller then reads the rest itself.
    /// An end of the stream before the last byte throws.
    /// </summary>
    public async ValueTask<int> ReadIntoPipeAsync(PayloadPipe pipe, int length, CancellationToken cancellationToken)
    {
        var socket = _socket ?? throw new InvalidOperationException("no socket to splice from");
        var head = Math.Min(Buffered, length);
        var done = head > 0 ? pipe.Append(_buffer.AsSpan(_start, head)) : 0;
        if (done > 0)
        {
            Consume(done);
        }
        if (done < head)
        {
            return done;
        }
        Progress();
        try
        {
            while (done < length)
            {
                var n = await socket.SpliceAsync(pipe, length - done, cancellationToken);
                if (n == IDirectSocket.SplicePipeFull)
                {
                    return done;
                }
                if (n == 0)
                {
                    NbdProtocolException.Throw("connection closed in the middle of a message");
                }
                done += n;
                Progress();
            }
            return done;
        }
        finally
        {
            Volatile.Write(ref _stalledSince, 0);
        }
    }

    /// <summary>Discards <paramref name="count"/> bytes (an invalid WRITE's payload), keeping the stream in sync.</summary>
    public async ValueTask SkipAsync(long count, CancellationToken cancellationToken)
    {
        try
        {
            while (count > 0)
            {
                Progress();
                if (Buffered == 0 && !await FillAsync(1, cancellationToken))
                {
                    NbdProtocolException.Throw("connection closed in the middle of a payload");
                }
                var n = (int)Math.Min(count, Buffered);
                Consume(n);
                count -= n;
            }
        }
        finally
        {
            Volatile.Write(ref _stalledSince, 0);
        }
    }

    // Stopwatch ticks of the last progress of a message begun and not yet complete; 0 between messages.
    private long _stalledSince;

    /// <summary>
    /// When the message being read last made progress (Stopwatch ticks), or 0 when no message is half-read: between
    /// requests a connection may be idle for as long as it likes (keepalive looks after a dead peer there).
    /// </summary>
    public long StalledSince => Volatile.Read(ref _stalledSince);

    private void Progress() => Volatile.Write(ref _stalledSince, System.Diagnostics.Stopwatch.GetTimestamp());

    private static bool Finish(int got, int wanted)
    {
        if (got == wanted)
        {
            return true;
        }
        if (got == 0)
        {
            return false;
        }
        NbdProtocolException.Throw("connection closed in the middle of a message");
        return false;
    }

    private int CopyBuffered(Span<byte> destination)
    {
        var n = Math.Min(destination.Length, Buffered);
        if (n > 0)
        {
            _buffer.AsSpan(_start, n).CopyTo(destination);
            Consume(n);
        }
        return n;
    }

    private void Consume(int n)
    {
        _start += n;
        if (_start == _end)
        {
            ReleaseBuffer();
        }
    }

    /// <summary>
    /// Takes what the client has sent by now without waiting (a plain socket only): true if bytes were added (false
    /// also at the end of the stream, which the next read reports). The receive loop asks this before it sends the replies it gathered, so
    /// requests that arrived while it worked join the same batch.
    /// </summary>
    public bool TryFillWithoutWaiting()
    {
        if (_socket is not { } socket)
        {
            return false;
        }
        _buffer ??= ArrayPool<byte>.Shared.Rent(BufferSize);
        Compact();
        var n = _end < _buffer.Length ? socket.TryReadNow(_buffer.AsSpan(_end)) : 0;
        if (n > 0)
        {
            Received(n);
            return true;
        }
        if (_end == _start)
        {
            ReleaseBuffer();
        }
        return false;
    }

    /// <summary>Reads until at least <paramref name="minimum"/> bytes are buffered; false on end of stream.</summary>
    private async ValueTask<bool> FillAsync(int minimum, CancellationToken cancellationToken)
    {
        if (_buffer is null)
        {
            // Wait for data without holding memory.
            // A zero-byte read waits for data without a buffer; it is not meant to read anything (CA2022 does not apply).
#pragma warning disable CA2022
            await _stream.ReadAsync(Memory<byte>.Empty, cancellationToken);
#pragma warning restore CA2022
            _buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
            _start = _end = 0;
        }
        else
        {
            Compact();
        }
        while (_end - _start < minimum)
        {
            var n = await _stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken);
            if (n == 0)
            {
                if (_end == _start)
                {
                    ReleaseBuffer();
                }
                return false;
            }
            Received(n);
        }
        return true;
    }

    /// <summary>Moves the unread bytes to the front of the buffer.</summary>
    private void Compact()
    {
        if (_start > 0)
        {
            _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
            _end -= _start;
            _start = 0;
        }
    }

    private void Received(int count)
    {
        _end += count;
        _used = Math.Max(_used, _end);
    }

    private void ReleaseBuffer()
    {
        if (_buffer is not null)
        {
            // Cleared (the part ever filled): these bytes were another request's data.
            _buffer.AsSpan(0, _used).Clear();
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = null;
        }
        _start = _end = _used = 0;
    }

    public void Dispose() => ReleaseBuffer();
}
