using System.Buffers;
using System.Runtime.CompilerServices;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Server.Transmission;

/// <summary>Room for one reply header (the largest is a structured chunk header plus an OFFSET_DATA offset: 28 bytes).</summary>
[InlineArray(32)]
internal struct ReplyHeader
{
    private byte _element0;
}

/// <summary>
/// The one way out of a connection: every reply goes through here, one message at a time.
/// While the receive loop works, it corks the writer: small replies gather in one buffer and leave in one system call
/// when the loop uncorks (when the client has nothing more queued), so a pipelining client gets a batch of replies per
/// write instead of one write per reply.
/// A reply whose data is small is copied behind its header so header and data leave in one write (one system call);
/// a large one is gathered with its header into one sendmsg on a plain socket (or sent from a file with sendfile), and
/// written as header then data over other streams. A reply that must be streamed in pieces (a simple READ reply larger than
/// one buffer) holds the lock across its pieces with <see cref="LockAsync"/>.
/// </summary>
internal sealed class ReplyWriter : IDisposable
{
    /// <summary>Data up to this size is coalesced with its header.</summary>
    public const int CoalesceLimit = 32 * 1024;

    /// <summary>Size of the cork buffer: replies beyond it go out as the buffer fills.</summary>
    public const int CorkSize = 64 * 1024;

    private readonly Stream _stream;
    private readonly SemaphoreSlim _lock = new(1, 1);
    // Set and cleared by the receive loop only; read under the lock. The buffer exists only while replies wait in it.
    private volatile bool _corked;
    private byte[]? _cork;
    private int _corkLength;
    // How much of _cork was ever filled since it was rented: the part to clear when it goes back.
    private int _corkUsed;

    // A plain socket connection: header and a large data block leave in one sendmsg (gathered), not two writes.
    private readonly Transport.IDirectSocket? _socket;
    // The gathered reply's header (used under the lock only).
    private readonly byte[] _gatherHeader = new byte[32];

    // When the write in progress began (Stopwatch ticks), 0 when none: the connection's progress check reads it.
    private long _writeSince;

    /// <summary>When the stream write in progress started (Stopwatch ticks), or 0 when the writer is not writing.</summary>
    public long WriteWaitingSince => Volatile.Read(ref _writeSince);

    // NbdServerOptions.ReplyWriterHeld (tests only).
    private readonly Func<ValueTask>? _held;

    /// <param name="stream">Where replies go.</param>
    /// <param name="socket">The same plain socket's own calls, when there is one with nothing (no TLS) above it.</param>
    /// <param name="held">NbdServerOptions.ReplyWriterHeld (tests only).</param>
    public ReplyWriter(Stream stream, Transport.IDirectSocket? socket, Func<ValueTask>? held = null)
    {
        _stream = stream;
        _held = held;
        _socket = socket;
    }

    public ValueTask SendSimpleAsync(ulong cookie, NbdError error, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var header = default(ReplyHeader);
        new NbdSimpleReply(error, cookie).Write(header);
        return SendAsync(header, NbdSimpleReply.Size, data, cancellationToken);
    }

    public ValueTask SendOffsetDataAsync(ulong cookie, ulong offset, ReadOnlyMemory<byte> data, bool done, CancellationToken cancellationToken)
    {
        var header = default(ReplyHeader);
        WriteOffsetDataHeader(header, cookie, offset, data.Length, done);
        return SendAsync(header, NbdStructuredReplyHeader.Size + NbdChunk.OffsetDataPrefixSize, data, cancellationToken);
    }

    private static int WriteOffsetDataHeader(Span<byte> destination, ulong cookie, ulong offset, int dataLength, bool done)
    {
        new NbdStructuredReplyHeader(done ? NbdReplyFlags.Done : NbdReplyFlags.None, NbdReplyType.OffsetData, cookie,
            (uint)(NbdChunk.OffsetDataPrefixSize + dataLength)).Write(destination);
        NbdChunk.WriteOffsetDataPrefix(destination[NbdStructuredReplyHeader.Size..], offset);
        return NbdStructuredReplyHeader.Size + NbdChunk.OffsetDataPrefixSize;
    }

    public ValueTask SendOffsetHoleAsync(ulong cookie, ulong offset, uint length, bool done, CancellationToken cancellationToken)
    {
        var header = default(ReplyHeader);
        new NbdStructuredReplyHeader(done ? NbdReplyFlags.Done : NbdReplyFlags.None, NbdReplyType.OffsetHole, cookie, NbdChunk.OffsetHoleSize).Write(header);
        NbdChunk.WriteOffsetHole(((Span<byte>)header)[NbdStructuredReplyHeader.Size..], offset, length);
        return SendAsync(header, NbdStructuredReplyHeader.Size + NbdChunk.OffsetHoleSize, default, cancellationToken);
    }

    public ValueTask SendStructuredNoneAsync(ulong cookie, CancellationToken cancellationToken)
    {
        var header = default(ReplyHeader);
        new NbdStructuredReplyHeader(NbdReplyFlags.Done, NbdReplyType.None, cookie, 0).Write(header);
        return SendAsync(header, NbdStructuredReplyHeader.Size, default, cancellationToken);
    }

    /// <summary>Whether replies can carry data straight from a file (a plain socket served by an event loop).</summary>
    public bool CanSendFile => _socket is not null;

    /// <summary>A simple reply whose data is <paramref name="count"/> bytes of <paramref name="file"/> (see <see cref="CanSendFile"/>).</summary>
    public ValueTask SendSimpleFromFileAsync(ulong cookie, System.Runtime.InteropServices.SafeHandle file, long offset, int count, CancellationToken cancellationToken)
    {
        var header = default(ReplyHeader);
        new NbdSimpleReply(NbdError.None, cookie).Write(header);
        return SendFromFileAsync(header, NbdSimpleReply.Size, file, offset, count, cancellationToken);
    }

    /// <summary>An OFFSET_DATA chunk whose data is read from <paramref name="file"/> at the same offset.</summary>
    public ValueTask SendOffsetDataFromFileAsync(ulong cookie, System.Runtime.InteropServices.SafeHandle file, long offset, int count, bool done, CancellationToken cancellationToken)
    {
        var header = default(ReplyHeader);
        var length = WriteOffsetDataHeader(header, cookie, (ulong)offset, count, done);
        return SendFromFileAsync(header, length, file, offset, count, cancellationToken);
    }

    private async ValueTask SendFromFileAsync(ReplyHeader header, int headerLength, System.Runtime.InteropServices.SafeHandle file, long offset, int count, CancellationToken cancellationToken)
    {
        await _lock.WaitAsync(cancellationToken);
        try
        {
            await FlushCorkLockedAsync(cancellationToken);
            await Timed(_socket!.SendFileAsync(Gathered(header, headerLength), file, offset, count, cancellationToken));
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>The final NBD_REPLY_TYPE_BLOCK_STATUS chunk of one metadata context.</summary>
    public ValueTask SendBlockStatusAsync(ulong cookie, uint contextId, List<NbdBlockDescriptor> extents, CancellationToken cancellationToken)
    {
        var payload = new byte[NbdBlockStatusChunk.Size(extents.Count)];
        NbdBlockStatusChunk.Write(payload, contextId, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(extents));
        var header = default(ReplyHeader);
        new NbdStructuredReplyHeader(NbdReplyFlags.Done, NbdReplyType.BlockStatus, cookie, (uint)payload.Length).Write(header);
        return SendAsync(header, NbdStructuredReplyHeader.Size, payload, cancellationToken);
    }

    /// <summary>A final NBD_REPLY_TYPE_ERROR chunk carrying a message for the human at the client.</summary>
    public ValueTask SendErrorChunkAsync(ulong cookie, NbdError error, string message, CancellationToken cancellationToken)
    {
        message = NbdStrings.Truncate(message, 1024);
        var payload = new byte[NbdChunk.ErrorSize(message)];
        NbdChunk.WriteError(payload, error, message);
        var header = default(ReplyHeader);
        new NbdStructuredReplyHeader(NbdReplyFlags.Done, NbdReplyType.Error, cookie, (uint)payload.Length).Write(header);
        return SendAsync(header, NbdStructuredReplyHeader.Size, payload, cancellationToken);
    }

    private async ValueTask SendAsync(ReplyHeader header, int headerLength, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        await _lock.WaitAsync(cancellationToken);
        try
        {
            if (_held is not null)
            {
                await _held();
            }
            await WriteLockedAsync(header, headerLength, data, cancellationToken);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>The header as memory that outlives the caller's stack (under the lock only).</summary>
    private ReadOnlyMemory<byte> Gathered(ReplyHeader header, int headerLength)
    {
        ((ReadOnlySpan<byte>)header)[..headerLength].CopyTo(_gatherHeader);
        return _gatherHeader.AsMemory(0, headerLength);
    }

    /// <summary>From now on small replies wait in the cork buffer (receive loop only).</summary>
    public void Cork() => _corked = true;

    /// <summary>Sends what waits in the cork buffer and stops corking (receive loop only, before it waits for the client).</summary>
    public async ValueTask UncorkAsync(CancellationToken cancellationToken)
    {
        if (!_corked)
        {
            return;
        }
        await _lock.WaitAsync(cancellationToken);
        try
        {
            _corked = false;
            await FlushCorkLockedAsync(cancellationToken);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// Writes what waits in the cork buffer. The buffer stays for the next replies while the writer is corked (it holds
    /// only this client's data); otherwise it goes back to the pool.
    /// </summary>
    private async ValueTask FlushCorkLockedAsync(CancellationToken cancellationToken)
    {
        if (_cork is not { } cork)
        {
            return;
        }
        try
        {
            await Timed(_stream.WriteAsync(cork.AsMemory(0, _corkLength), cancellationToken));
            _corkLength = 0;
        }
        finally
        {
            if (!_corked || _corkLength > 0)
            {
                ReleaseCork();
            }
        }
    }

    /// <summary>Gives the cork buffer back, cleared where used: it held this client's data, and the pool serves everyone.</summary>
    private void ReleaseCork()
    {
        if (_cork is { } cork)
        {
            cork.AsSpan(0, _corkUsed).Clear();
            ArrayPool<byte>.Shared.Return(cork);
            _cork = null;
            _corkLength = _corkUsed = 0;
        }
    }

    /// <summary>Writes header and data; the caller holds the lock.</summary>
    private async ValueTask WriteLockedAsync(ReplyHeader header, int headerLength, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var coalesce = data.Length <= CoalesceLimit;
        if (_corked && coalesce)
        {
            var needed = headerLength + data.Length;
            if (_cork is not null && _corkLength + needed > _cork.Length)
            {
                await FlushCorkLockedAsync(cancellationToken);
            }
            _cork ??= ArrayPool<byte>.Shared.Rent(CorkSize);
            ((ReadOnlySpan<byte>)header)[..headerLength].CopyTo(_cork.AsSpan(_corkLength));
            data.Span.CopyTo(_cork.AsSpan(_corkLength + headerLength));
            _corkLength += needed;
            _corkUsed = Math.Max(_corkUsed, _corkLength);
            return;
        }
        // Whatever waits in the cork buffer goes first: a reply written in parts must stay in one piece on the wire.
        await FlushCorkLockedAsync(cancellationToken);
        if (!coalesce && _socket is not null)
        {
            await Timed(_socket.WriteGatheredAsync(Gathered(header, headerLength), data, cancellationToken));
            return;
        }
        var total = headerLength + (coalesce ? data.Length : 0);
        var scratch = ArrayPool<byte>.Shared.Rent(total);
        try
        {
            ((ReadOnlySpan<byte>)header)[..headerLength].CopyTo(scratch);
            if (coalesce)
            {
                data.Span.CopyTo(scratch.AsSpan(headerLength));
            }
            await Timed(_stream.WriteAsync(scratch.AsMemory(0, total), cancellationToken));
        }
        finally
        {
            // Cleared (the part used): it held this client's data, and the pool serves everyone.
            if (coalesce && data.Length > 0)
            {
                scratch.AsSpan(0, total).Clear();
            }
            ArrayPool<byte>.Shared.Return(scratch);
        }
        if (!coalesce)
        {
            await Timed(_stream.WriteAsync(data, cancellationToken));
        }
    }

    /// <summary>
    /// Begins a simple reply whose data is sent in pieces (a READ larger than one buffer: header and data must be
    /// contiguous on the wire): takes the writer, writes the header and the first piece.
    /// The caller sends the rest with <see cref="WriteRawLockedAsync"/> and disposes the result to let other replies through.
    /// </summary>
    public ValueTask<Releaser> BeginSimpleDataAsync(ulong cookie, ReadOnlyMemory<byte> first, CancellationToken cancellationToken)
    {
        var header = default(ReplyHeader);
        new NbdSimpleReply(NbdError.None, cookie).Write(header);
        return BeginAsync(header, NbdSimpleReply.Size, first, cancellationToken);
    }

    /// <summary>Begins one OFFSET_DATA chunk (not the last of its reply) of <paramref name="totalLength"/> bytes sent in pieces, as <see cref="BeginSimpleDataAsync"/>.</summary>
    public ValueTask<Releaser> BeginOffsetDataAsync(ulong cookie, ulong offset, int totalLength, ReadOnlyMemory<byte> first, CancellationToken cancellationToken)
    {
        var header = default(ReplyHeader);
        var headerLength = WriteOffsetDataHeader(header, cookie, offset, totalLength, done: false);
        return BeginAsync(header, headerLength, first, cancellationToken);
    }

    private async ValueTask<Releaser> BeginAsync(ReplyHeader header, int headerLength, ReadOnlyMemory<byte> first, CancellationToken cancellationToken)
    {
        await _lock.WaitAsync(cancellationToken);
        try
        {
            await WriteLockedAsync(header, headerLength, first, cancellationToken);
        }
        catch
        {
            _lock.Release();
            throw;
        }
        return new Releaser(_lock);
    }

    /// <summary>The next piece of a reply begun with BeginSimpleDataAsync or BeginOffsetDataAsync (the caller holds the writer).</summary>
    public async ValueTask WriteRawLockedAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        await FlushCorkLockedAsync(cancellationToken);
        await Timed(_stream.WriteAsync(data, cancellationToken));
    }

    /// <summary>
    /// A stream write, stamped while it waits for the client to make room (one that completed at once costs a
    /// completed-task check only): the connection's progress check cuts a client whose write waits past send-timeout.
    /// </summary>
    private async ValueTask Timed(ValueTask write)
    {
        if (write.IsCompletedSuccessfully)
        {
            write.GetAwaiter().GetResult();
            return;
        }
        Volatile.Write(ref _writeSince, System.Diagnostics.Stopwatch.GetTimestamp());
        try
        {
            await write;
        }
        finally
        {
            Volatile.Write(ref _writeSince, 0);
        }
    }

    public readonly struct Releaser(SemaphoreSlim semaphore) : IDisposable
    {
        public void Dispose() => semaphore.Release();
    }

    public void Dispose()
    {
        ReleaseCork();
        _lock.Dispose();
    }
}
