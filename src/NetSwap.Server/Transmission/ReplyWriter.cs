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
/// A reply whose data is small is copied behind its header so header and data leave in one write (one system call);
/// a large one is written as header then data. A reply that must be streamed in pieces (a simple READ reply larger than
/// one buffer) holds the lock across its pieces with <see cref="LockAsync"/>.
/// </summary>
internal sealed class ReplyWriter : IDisposable
{
    /// <summary>Data up to this size is coalesced with its header.</summary>
    public const int CoalesceLimit = 32 * 1024;

    private readonly Stream _stream;
    private readonly SemaphoreSlim _lock = new(1, 1);

    public ReplyWriter(Stream stream) => _stream = stream;

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

    public static int WriteOffsetDataHeader(Span<byte> destination, ulong cookie, ulong offset, int dataLength, bool done)
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
            await WriteLockedAsync(header, headerLength, data, cancellationToken);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>Writes header and data; the caller holds the lock.</summary>
    public async ValueTask WriteLockedAsync(ReplyHeader header, int headerLength, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var coalesce = data.Length <= CoalesceLimit;
        var total = headerLength + (coalesce ? data.Length : 0);
        var scratch = ArrayPool<byte>.Shared.Rent(total);
        try
        {
            ((ReadOnlySpan<byte>)header)[..headerLength].CopyTo(scratch);
            if (coalesce)
            {
                data.Span.CopyTo(scratch.AsSpan(headerLength));
            }
            await _stream.WriteAsync(scratch.AsMemory(0, total), cancellationToken);
        }
        finally
        {
            // Cleared: it held another client's data.
            ArrayPool<byte>.Shared.Return(scratch, clearArray: coalesce && data.Length > 0);
        }
        if (!coalesce)
        {
            await _stream.WriteAsync(data, cancellationToken);
        }
    }

    /// <summary>Takes the writer for a reply sent in several writes; dispose the result to let other replies through.</summary>
    public async ValueTask<Releaser> LockAsync(CancellationToken cancellationToken)
    {
        await _lock.WaitAsync(cancellationToken);
        return new Releaser(_lock);
    }

    public ValueTask WriteRawLockedAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken) => _stream.WriteAsync(data, cancellationToken);

    public readonly struct Releaser(SemaphoreSlim semaphore) : IDisposable
    {
        public void Dispose() => semaphore.Release();
    }

    public void Dispose() => _lock.Dispose();
}
