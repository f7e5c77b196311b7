using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;

namespace NetSwap.Server.Transport;

/// <summary>
/// A connected stream socket read and written with non-blocking system calls, waiting for readiness on an
/// <see cref="EventLoop"/>. It replaces <see cref="NetworkStream"/> for accepted, inetd and socket-activated
/// connections: its waits end on the event loop's thread, and with <see cref="InlineCompletions"/> the waiting code
/// (the receive loop of the transmission phase) continues right there instead of being queued to the thread pool.
/// One reader and one writer at a time (the receive loop and the <see cref="Transmission.ReplyWriter"/>), on any threads.
/// Ownership: the stream owns the socket and closes it on dispose; the socket is never used by .NET's own engine.
/// </summary>
internal sealed class ReactorStream : Stream, ILoopAffinity, IDirectSocket
{
    private const uint ReadEvents = SocketCalls.EpollIn | SocketCalls.EpollRdHup | SocketCalls.EpollHup | SocketCalls.EpollErr;
    private const uint WriteEvents = SocketCalls.EpollOut | SocketCalls.EpollHup | SocketCalls.EpollErr;

    private readonly Socket _socket;
    private readonly SafeSocketHandle _handle;
    private readonly EventLoop _loop;
    private readonly ulong _key;
    // Guards the waiters' Pending flags and _disposed against the event loop. Held for a few instructions only.
    private readonly Lock _gate = new();
    // Bumped by every event: an attempt that failed with EAGAIN waits only if no event came since it started.
    private int _sequence;
    private readonly Waiter _reader;
    private readonly Waiter _writer;
    private bool _disposed;
    // Waits that really waited for an event (read by the receive loop to know it gave way to other sockets).
    private int _waits;

    /// <summary>How many times a read or write of this stream has waited for the socket so far.</summary>
    public int Waits => Volatile.Read(ref _waits);

    /// <summary>
    /// Bytes the peer's TCP has acknowledged so far (TCP_INFO tcpi_bytes_acked), or -1 where the socket cannot say.
    /// Once a client stops reading, its receive window closes and this stops growing; while it reads, however slowly,
    /// it grows, even when our send waits for a wake-up that comes only once a third of the send buffer is free.
    /// </summary>
    public long BytesAcked() => SocketCalls.TcpBytesAcked(_handle);

    private ReactorStream(Socket socket, EventLoop loop)
    {
        _socket = socket;
        _handle = socket.SafeHandle;
        _loop = loop;
        _reader = new Waiter(this);
        _writer = new Waiter(this);
        _key = loop.Register(this, _handle);
        // recv and send say MSG_DONTWAIT themselves; sendfile has no such flag and follows the descriptor's mode.
        socket.Blocking = false;
    }

    /// <summary>
    /// A stream over the socket, or null where the event loops cannot be used (not Linux x86-64, or epoll refused:
    /// out of memory, or fs.epoll.max_user_watches reached): then the caller uses NetworkStream and the connection is
    /// served all the same.
    /// </summary>
    public static ReactorStream? TryCreate(Socket socket)
    {
        if (!SocketCalls.Supported || socket.SocketType != SocketType.Stream)
        {
            return null;
        }
        try
        {
            return new ReactorStream(socket, Reactor.Next());
        }
        catch (IOException)
        {
            return null;
        }
    }

    public Socket Socket => _socket;

    public bool IsOnLoop => _loop.IsCurrentThread;

    public EventLoop.YieldAwaitable Yield() => _loop.Yield();

    public void WhenIdle(IIdleWork work) => _loop.WhenIdle(work);

    public void AssertOnLoop(string what) => _loop.AssertOnLoop(what);

    /// <summary>
    /// Whether a wait that ends with an event continues on the event loop's thread (true) or on the thread pool (false,
    /// the default). The transmission phase turns it on: its code never blocks except on storage it knows to be in memory.
    /// The handshake leaves it off (TLS handshakes and export set-up may take milliseconds).
    /// </summary>
    public bool InlineCompletions { get; set; }

    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Flush()
    {
    }

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Called by the event loop with the events of one epoll_wait.</summary>
    internal void OnEvents(uint events)
    {
        Waiter? reader = null, writer = null;
        lock (_gate)
        {
            _sequence++;
            if ((events & ReadEvents) != 0 && _reader.Pending)
            {
                _reader.Pending = false;
                reader = _reader;
            }
            if ((events & WriteEvents) != 0 && _writer.Pending)
            {
                _writer.Pending = false;
                writer = _writer;
            }
        }
        var inline = InlineCompletions;
        writer?.Signal(inline);
        reader?.Signal(inline);
    }

    public override unsafe ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var sequence = Volatile.Read(ref _sequence);
        if (buffer.IsEmpty)
        {
            // A zero-byte read waits for data without taking any (an idle connection holds no buffer).
            byte probe;
            return TryReceive(new Span<byte>(&probe, 1), SocketCalls.MsgPeek) >= 0
                ? new ValueTask<int>(0)
                : WaitReadableAsync(sequence, cancellationToken);
        }
        var n = TryReceive(buffer.Span, 0);
        return n >= 0 ? new ValueTask<int>(n) : ReceiveAsync(buffer, sequence, cancellationToken);
    }

    /// <summary>Bytes received now (0 at end of stream), or -1 if none have arrived: never waits.</summary>
    public int TryReadNow(Span<byte> buffer) => TryReceive(buffer, 0);

    public ValueTask<int> SpliceAsync(PayloadPipe pipe, int count, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var sequence = Volatile.Read(ref _sequence);
        var n = TrySplice(pipe, count);
        return n != SpliceNothingYet ? new ValueTask<int>(n) : SpliceWhenReadableAsync(pipe, count, sequence, cancellationToken);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<int> SpliceWhenReadableAsync(PayloadPipe pipe, int count, int sequence, CancellationToken cancellationToken)
    {
        while (true)
        {
            await WaitAsync(_reader, sequence, cancellationToken);
            sequence = Volatile.Read(ref _sequence);
            var n = TrySplice(pipe, count);
            if (n != SpliceNothingYet)
            {
                return n;
            }
        }
    }

    private const int SpliceNothingYet = -1;

    /// <summary>Bytes moved into the pipe now (0 at end of stream), <see cref="SpliceNothingYet"/>, or
    /// <see cref="IDirectSocket.SplicePipeFull"/>: never waits.</summary>
    private unsafe int TrySplice(PayloadPipe pipe, int count)
    {
        while (true)
        {
            var n = SocketCalls.Splice(_handle, pipe.WriteEnd, (nuint)count);
            if (n >= 0)
            {
                pipe.Held += (int)n;
                return (int)n;
            }
            var errno = Marshal.GetLastPInvokeError();
            if (errno == SocketCalls.EAGAIN)
            {
                // EAGAIN from either end. Bytes waiting on the socket mean a full pipe: waiting for the socket then
                // would wait for ever (the edge-triggered loop has already reported them).
                byte probe;
                return TryReceive(new Span<byte>(&probe, 1), SocketCalls.MsgPeek) > 0 ? IDirectSocket.SplicePipeFull : SpliceNothingYet;
            }
            if (errno != SocketCalls.EINTR)
            {
                throw TransportException.FromErrno("splice", errno);
            }
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<int> WaitReadableAsync(int sequence, CancellationToken cancellationToken)
    {
        await WaitAsync(_reader, sequence, cancellationToken);
        return 0;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<int> ReceiveAsync(Memory<byte> buffer, int sequence, CancellationToken cancellationToken)
    {
        while (true)
        {
            await WaitAsync(_reader, sequence, cancellationToken);
            sequence = Volatile.Read(ref _sequence);
            var n = TryReceive(buffer.Span, 0);
            if (n >= 0)
            {
                return n;
            }
        }
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var sequence = Volatile.Read(ref _sequence);
        var sent = SendAll(buffer.Span);
        return sent == buffer.Length ? default : SendAsync(buffer[sent..], sequence, cancellationToken);
    }

    /// <summary>Header and data in one sendmsg (one system call for a reply with a large payload).</summary>
    public ValueTask WriteGatheredAsync(ReadOnlyMemory<byte> header, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var sequence = Volatile.Read(ref _sequence);
        var sent = TrySendGathered(header.Span, data.Span);
        if (sent == header.Length + data.Length)
        {
            return default;
        }
        return sent < header.Length
            ? SendTwoAsync(header[sent..], data, sequence, cancellationToken)
            : SendAsync(data[(sent - header.Length)..], sequence, cancellationToken);
    }

    /// <summary>
    /// A header, then <paramref name="count"/> bytes of <paramref name="file"/> from <paramref name="offset"/> by sendfile:
    /// the page cache's pages go to the socket without a copy through this process. Bytes past the end of a file that
    /// shrank are sent as zeros (as a read would return them), so the reply is always as long as its header says.
    /// </summary>
    public ValueTask SendFileAsync(ReadOnlyMemory<byte> header, SafeHandle file, long offset, int count, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var sequence = Volatile.Read(ref _sequence);
        var sent = SendAll(header.Span, SocketCalls.MsgMore);
        if (sent < header.Length)
        {
            return SendHeaderThenFileAsync(header[sent..], file, offset, count, sequence, cancellationToken);
        }
        return SendFileRestAsync(file, offset, count, cancellationToken);
    }

    private async ValueTask SendHeaderThenFileAsync(ReadOnlyMemory<byte> header, SafeHandle file, long offset, int count, int sequence, CancellationToken cancellationToken)
    {
        await SendAsync(header, sequence, cancellationToken);
        await SendFileRestAsync(file, offset, count, cancellationToken);
    }

    private async ValueTask SendFileRestAsync(SafeHandle file, long offset, int count, CancellationToken cancellationToken)
    {
        while (true)
        {
            var sequence = Volatile.Read(ref _sequence);
            var (done, status) = TrySendFile(file, ref offset, count);
            count -= done;
            switch (status)
            {
                case FileSend.Complete:
                    return;
                case FileSend.EndOfFile:
                    await WriteZerosAsync(count, cancellationToken);
                    return;
                default:
                    // Only after EAGAIN: then an edge comes when the socket has room again.
                    await WaitAsync(_writer, sequence, cancellationToken);
                    break;
            }
        }
    }

    private async ValueTask WriteZerosAsync(int count, CancellationToken cancellationToken)
    {
        var zeros = new byte[Math.Min(count, 64 * 1024)];
        for (; count > 0; count -= zeros.Length)
        {
            await WriteAsync(zeros.AsMemory(0, Math.Min(count, zeros.Length)), cancellationToken);
        }
    }

    private enum FileSend
    {
        Complete,
        WouldBlock,
        EndOfFile,
    }

    /// <summary>Sends what the socket takes now; says why it stopped short.</summary>
    private unsafe (int Done, FileSend Status) TrySendFile(SafeHandle file, ref long offset, int count)
    {
        var done = 0;
        while (done < count)
        {
            var position = offset;
            var n = SocketCalls.SendFile(_handle, file, &position, (nuint)(count - done));
            if (n > 0)
            {
                done += (int)n;
                offset = position;
                continue;
            }
            if (n == 0)
            {
                return (done, FileSend.EndOfFile);
            }
            var errno = Marshal.GetLastPInvokeError();
            if (errno == SocketCalls.EAGAIN)
            {
                return (done, FileSend.WouldBlock);
            }
            if (errno != SocketCalls.EINTR)
            {
                throw TransportException.FromErrno("sendfile", errno);
            }
        }
        return (done, FileSend.Complete);
    }

    private async ValueTask SendTwoAsync(ReadOnlyMemory<byte> first, ReadOnlyMemory<byte> second, int sequence, CancellationToken cancellationToken)
    {
        await SendAsync(first, sequence, cancellationToken);
        await WriteAsync(second, cancellationToken);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SendAsync(ReadOnlyMemory<byte> rest, int sequence, CancellationToken cancellationToken)
    {
        while (!rest.IsEmpty)
        {
            await WaitAsync(_writer, sequence, cancellationToken);
            sequence = Volatile.Read(ref _sequence);
            rest = rest[SendAll(rest.Span)..];
        }
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        while (true)
        {
            var n = TryReceive(buffer, 0);
            if (n >= 0)
            {
                return n;
            }
            SocketCalls.WaitReady(_handle, SocketCalls.PollIn);
        }
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            buffer = buffer[SendAll(buffer)..];
            if (!buffer.IsEmpty)
            {
                SocketCalls.WaitReady(_handle, SocketCalls.PollOut);
            }
        }
    }

    /// <summary>Bytes received (0 at end of stream), or -1 if none are there yet.</summary>
    private unsafe int TryReceive(Span<byte> buffer, int flags)
    {
        fixed (byte* start = buffer)
        {
            while (true)
            {
                var n = SocketCalls.Recv(_handle, start, (nuint)buffer.Length, flags | SocketCalls.MsgDontWait);
                if (n >= 0)
                {
                    return (int)n;
                }
                var errno = Marshal.GetLastPInvokeError();
                if (errno == SocketCalls.EAGAIN)
                {
                    return -1;
                }
                if (errno != SocketCalls.EINTR)
                {
                    throw TransportException.FromErrno("recv", errno);
                }
            }
        }
    }

    /// <summary>Sends as much as the socket takes now; returns the count.</summary>
    private unsafe int SendAll(ReadOnlySpan<byte> buffer, int flags = 0)
    {
        fixed (byte* start = buffer)
        {
            var done = 0;
            while (done < buffer.Length)
            {
                var n = SocketCalls.Send(_handle, start + done, (nuint)(buffer.Length - done), flags | SocketCalls.MsgDontWait | SocketCalls.MsgNoSignal);
                if (n >= 0)
                {
                    done += (int)n;
                    continue;
                }
                var errno = Marshal.GetLastPInvokeError();
                if (errno == SocketCalls.EAGAIN)
                {
                    break;
                }
                if (errno != SocketCalls.EINTR)
                {
                    throw TransportException.FromErrno("send", errno);
                }
            }
            return done;
        }
    }

    private unsafe int TrySendGathered(ReadOnlySpan<byte> header, ReadOnlySpan<byte> data)
    {
        fixed (byte* h = header)
        fixed (byte* d = data)
        {
            var vectors = stackalloc SocketCalls.IoVec[2];
            vectors[0] = new SocketCalls.IoVec { Base = h, Length = (nuint)header.Length };
            vectors[1] = new SocketCalls.IoVec { Base = d, Length = (nuint)data.Length };
            var message = new SocketCalls.MsgHdr { Iov = vectors, IovLength = 2 };
            while (true)
            {
                var n = SocketCalls.SendMsg(_handle, &message, SocketCalls.MsgDontWait | SocketCalls.MsgNoSignal);
                if (n >= 0)
                {
                    return (int)n;
                }
                var errno = Marshal.GetLastPInvokeError();
                if (errno == SocketCalls.EAGAIN)
                {
                    return 0;
                }
                if (errno != SocketCalls.EINTR)
                {
                    throw TransportException.FromErrno("sendmsg", errno);
                }
            }
        }
    }

    /// <summary>Waits for the next event for <paramref name="waiter"/>'s direction, unless one came since <paramref name="sequence"/>.</summary>
    private ValueTask WaitAsync(Waiter waiter, int sequence, CancellationToken cancellationToken)
    {
        waiter.Prepare(cancellationToken);
        bool wait, disposed;
        lock (_gate)
        {
            disposed = _disposed;
            wait = !disposed && _sequence == sequence && !waiter.CancelRequested;
            waiter.Pending = wait;
        }
        if (wait)
        {
            Interlocked.Increment(ref _waits);
            return new ValueTask(waiter, waiter.Version);
        }
        // Outside the lock: disposing the registration waits for its callback, which takes the lock.
        waiter.Unprepare();
        ObjectDisposedException.ThrowIf(disposed, this);
        cancellationToken.ThrowIfCancellationRequested();
        // An event came in the meantime: the caller tries again at once.
        return default;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            Waiter? reader = null, writer = null;
            lock (_gate)
            {
                if (_disposed)
                {
                    return;
                }
                _disposed = true;
                if (_reader.Pending)
                {
                    _reader.Pending = false;
                    reader = _reader;
                }
                if (_writer.Pending)
                {
                    _writer.Pending = false;
                    writer = _writer;
                }
            }
            _loop.Unregister(_key, _handle);
            reader?.Fail(new ObjectDisposedException(nameof(ReactorStream)));
            writer?.Fail(new ObjectDisposedException(nameof(ReactorStream)));
            _socket.Dispose();
        }
        base.Dispose(disposing);
    }

    /// <summary>One direction's wait: reused for every wait (one reader and one writer at a time).</summary>
    private sealed class Waiter(ReactorStream owner) : IValueTaskSource
    {
        private ManualResetValueTaskSourceCore<bool> _core;
        private CancellationTokenRegistration _registration;
        // Both under owner._gate.
        public bool Pending;
        public bool CancelRequested;

        public short Version => _core.Version;

        /// <summary>Before a wait: fresh completion, cancellation hooked (a token already cancelled sets CancelRequested now).</summary>
        public void Prepare(CancellationToken cancellationToken)
        {
            _core.Reset();
            CancelRequested = false;
            if (cancellationToken.CanBeCanceled)
            {
                _registration = cancellationToken.UnsafeRegister(static s => ((Waiter)s!).Cancel(), this);
            }
        }

        /// <summary>The wait did not happen after all.</summary>
        public void Unprepare()
        {
            var registration = _registration;
            _registration = default;
            registration.Dispose();
        }

        private void Cancel()
        {
            lock (owner._gate)
            {
                if (!Pending)
                {
                    CancelRequested = true;
                    return;
                }
                Pending = false;
            }
            Fail(new OperationCanceledException());
        }

        public void Signal(bool inline)
        {
            _core.RunContinuationsAsynchronously = !inline;
            _core.SetResult(true);
        }

        public void Fail(Exception error)
        {
            _core.RunContinuationsAsynchronously = true;
            _core.SetException(error);
        }

        public void GetResult(short token)
        {
            var registration = _registration;
            _registration = default;
            registration.Dispose();
            _core.GetResult(token);
        }

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }
}
