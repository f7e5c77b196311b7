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
    private byte[]? _buffer;
    private int _start;
    private int _end;
    // How far into _buffer bytes were ever received since it was rented: the part to clear when it goes back.
    private int _used;

    public NbdStreamReader(Stream stream) => _stream = stream;

    public int Buffered => _end - _start;

    /// <summary>Whether a receive buffer is rented right now (never while the connection waits idle).</summary>
    public bool HoldsBuffer => _buffer is not null;

    /// <summary>
    /// Fills <paramref name="destination"/>. Returns false if the stream ended before the first byte (a clean end at a
    /// message boundary); an end in the middle is a truncated message and throws <see cref="NbdProtocolException"/>.
    /// </summary>
    public async ValueTask<bool> TryReadExactlyAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        var copied = CopyBuffered(destination.Span);
        if (copied == destination.Length)
        {
            return true;
        }
        var remaining = destination[copied..];
        if (remaining.Length >= BufferSize / 2)
        {
            // Large payloads go straight into the caller's memory: no double copy, no buffer.
            var n = await _stream.ReadAtLeastAsync(remaining, remaining.Length, throwOnEndOfStream: false, cancellationToken);
            return Finish(copied + n, destination.Length);
        }
        _ = await FillAsync(remaining.Length, cancellationToken);
        copied += CopyBuffered(remaining.Span);
        return Finish(copied, destination.Length);
    }

    public async ValueTask ReadExactlyAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        if (!await TryReadExactlyAsync(destination, cancellationToken))
        {
            NbdProtocolException.Throw("connection closed in the middle of a message");
        }
    }

    /// <summary>Discards <paramref name="count"/> bytes (an invalid WRITE's payload), keeping the stream in sync.</summary>
    public async ValueTask SkipAsync(long count, CancellationToken cancellationToken)
    {
        while (count > 0)
        {
            if (Buffered == 0 && !await FillAsync(1, cancellationToken))
            {
                NbdProtocolException.Throw("connection closed in the middle of a payload");
            }
            var n = (int)Math.Min(count, Buffered);
            Consume(n);
            count -= n;
        }
    }

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
        if (_stream is not ReactorStream socket)
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
