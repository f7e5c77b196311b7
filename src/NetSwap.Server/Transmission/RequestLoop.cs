using System.Buffers;
using System.Numerics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using NetSwap.Protocol.Nbd;
using NetSwap.Server.Exports;
using NetSwap.Server.Handshake;
using NetSwap.Server.Hosting;
using NetSwap.Server.Transport;

namespace NetSwap.Server.Transmission;

/// <summary>
/// The transmission phase of one connection: one receive loop parses and validates requests and dispatches them; each
/// runs through one path, validate → execute → reply, in parallel with the others, and replies through the channel's
/// single <see cref="ReplyWriter"/>, which alone frames replies. Payload buffers come from a per-connection
/// <see cref="ByteBudget"/>, so a connection holds at most Options.ConnectionBufferBytes of payload however large or
/// many its requests are. It sees where it runs only through <see cref="ILoopAffinity"/>.
/// </summary>
internal sealed class RequestLoop : IIdleWork
{
    /// <summary>Largest piece a request moves at once; larger requests are streamed through buffers of this size.</summary>
    public const int ChunkSize = 256 * 1024;
    /// <summary>Reads at least this long look for holes first, so sparse areas cost a 12-byte chunk instead of zeros.</summary>
    private const int HoleDetectionThreshold = 64 * 1024;

    private readonly NbdServerContext _context;
    private readonly ILogger _logger;
    private readonly ConnectionChannel _channel;
    private readonly NegotiatedSession _session;
    private readonly ConnectionInfo _info;
    // The connection's end: cancelled by the connection's Abort, or here when the stream broke.
    private readonly CancellationTokenSource _abort;
    private readonly Action<string, Exception?> _cutConnection;
    private readonly ILoopAffinity? _loop;
    private readonly ByteBudget _budget;
    private readonly SemaphoreSlim _slots;
    // Requests accepted and not yet answered, plus one for the receive loop itself while it runs.
    private int _pending = 1;
    private readonly TaskCompletionSource _idle = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _bytesRead;
    private long _bytesWritten;
    // A payload buffer kept between requests while the event loop is busy (see Return); null when idle.
    private byte[]? _spare;
    // Whether OnLoopIdle is queued on the event loop (touched on the loop's thread only).
    private bool _spareQueued;
    // Set by the receive loop when a payload pipe filled before its payload's end: this connection's segments are small,
    // so its payloads go through buffers from then on.
    private bool _noSplice;

    /// <summary>WRITE payloads from this size up to one chunk wait in a pipe (see <see cref="PayloadPipe"/>) when the
    /// socket and the export's file allow it: below it the copy a pipe saves costs less than its extra system call.</summary>
    private const int SpliceMinimum = PayloadPipes.Smallest;

    /// <summary>A WRITE's payload, in a buffer or waiting in a pipe, and the bytes of both budgets held for it.</summary>
    private readonly record struct Payload(byte[]? Buffer, PayloadPipe? Pipe, int Reserved);
    // bandwidth-per-client: made when the limit is set, rate followed on reload.
    private Access.TokenBucket? _bandwidth;

    /// <param name="cutConnection">The connection's Abort: ends the connection with a reason (and the error behind it).</param>
    public RequestLoop(NbdServerContext context, ConnectionChannel channel, NegotiatedSession session, ConnectionInfo info,
        CancellationTokenSource abort, Action<string, Exception?> cutConnection)
    {
        _context = context;
        _logger = context.Logger;
        _channel = channel;
        _session = session;
        _info = info;
        _abort = abort;
        _cutConnection = cutConnection;
        _loop = channel.Loop;
        _budget = new ByteBudget(context.Options.ConnectionBufferBytes);
        _slots = new SemaphoreSlim(context.Options.MaxRequestsInFlight);
    }

    private long Id => _info.Id;
    private string Client => _info.RemoteAddress;
    private NbdStreamReader _reader => _channel.Reader;
    private ReplyWriter _writer => _channel.Writer;

    /// <summary>Why the loop ended, once <see cref="RunAsync"/> returned.</summary>
    public string CloseReason { get; private set; } = "client closed without NBD_CMD_DISC";

    /// <summary>The client ended with NBD_CMD_DISC: its swap area is destroyed at once rather than kept for a reconnect.</summary>
    public bool CleanDisconnect { get; private set; }

    public long BytesRead => Interlocked.Read(ref _bytesRead);

    /// <summary>Most payload buffer bytes this connection ever held at once (bounded by ConnectionBufferBytes).</summary>
    public int PeakPayloadBytes => _budget.PeakInUse;

    /// <summary>Payload buffer bytes held right now, the spare included. Zero for an idle connection.</summary>
    public int HeldPayloadBytes => _budget.Capacity - _budget.Available + (Volatile.Read(ref _spare)?.Length ?? 0);
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);

    /// <summary>Completes when nothing is in flight and the receive loop has ended (or never started).</summary>
    public Task WhenIdleAsync() => _idle.Task;

    /// <summary>True while requests are being executed; the server waits for these at shutdown.</summary>
    public bool HasRequestsInFlight => Volatile.Read(ref _pending) > 1;

    /// <summary>
    /// Receives requests until the client leaves, then waits for every request in flight (DISC: "the server MUST
    /// handle all outstanding requests" before closing). Throws when the stream breaks or the client breaks the rules.
    /// </summary>
    public async Task RunAsync()
    {
        var session = _session;
        // From here the receive loop runs on the event loop's thread whenever the socket wakes it (see Dispatch).
        _channel.EnterTransmission();
        var abort = _abort.Token;
        var header = new byte[NbdRequest.Size];
        var size = (ulong)session.Backend.Size;
        var clean = false;
        // Requests handled since the last look at whether the socket made us wait (fairness on a shared event loop).
        var turn = 0;
        var waits = 0;
        try
        {
            while (true)
            {
                // Replies of requests run inline gather in the writer while the loop works, and leave in one write
                // when it has nothing more to do: before it waits for the client, it takes whatever the client sent in
                // the meantime (a plain socket, without waiting), so a pipelining client gets its replies in batches.
                if (_loop is { } loop && ++turn >= RequestsPerTurn)
                {
                    turn = 0;
                    if (loop.Waits == waits && loop.IsOnLoop)
                    {
                        // This client kept its socket full for a whole turn: let the loop's other clients have theirs.
                        await _writer.UncorkAsync(abort);
                        await loop.Yield();
                    }
                    waits = loop.Waits;
                }
                _writer.Cork();
                while (_reader.Buffered < NbdRequest.Size)
                {
                    if (!_reader.TryFillWithoutWaiting())
                    {
                        await _writer.UncorkAsync(abort);
                        break;
                    }
                }
                if (!await _reader.TryReadExactlyAsync(header, abort))
                {
                    CloseReason = "client closed without NBD_CMD_DISC";
                    clean = true;
                    return;
                }
                NbdRequest.TryRead(header, out var request);
                if (request.Command == NbdCommand.Disc)
                {
                    CloseReason = "client disconnected (NBD_CMD_DISC)";
                    CleanDisconnect = true;
                    clean = true;
                    return;
                }
                var (error, reason) = _context.ShuttingDown
                    ? (NbdError.Shutdown, "server is shutting down")
                    : RequestValidator.Validate(request, session.Flags, size, session.StructuredReplies, session.AllocationContext != 0);
                if (error != NbdError.None)
                {
                    ConnectionLog.RequestInvalid(_logger, Id, Client, request.Command, request.Offset, request.Length, error, reason!);
                    if (request.Command == NbdCommand.Write)
                    {
                        // Keep the stream in sync: the payload follows whether we want it or not.
                        await _reader.SkipAsync(request.Length, abort);
                    }
                    await SendErrorAsync(request, error, reason!, abort);
                    continue;
                }
                await _slots.WaitAsync(abort);
                Interlocked.Increment(ref _pending);
                if (request.Command == NbdCommand.Write)
                {
                    await ReceiveWriteAsync(request, abort);
                }
                else
                {
                    Dispatch(request, null);
                }
            }
        }
        finally
        {
            try
            {
                if (clean)
                {
                    // Replies still gathered go out; from here on every reply is written at once.
                    await _writer.UncorkAsync(abort);
                }
            }
            catch (Exception e) when (TransportException.IsConnectionEnd(e, _abort.Token))
            {
                // Cut meanwhile (a read that failed after its reply header, a reply that could not be sent, shutdown):
                // nothing more can go out.
                clean = false;
            }
            finally
            {
                if (!clean)
                {
                    // The stream is broken: requests still running cannot reply, so stop them rather than wait.
                    await _abort.CancelAsync();
                }
                // Whatever happened above: a cut during DISC must not leave the count up, or the connection never ends.
                EndPending();
            }
            await _idle.Task;
            ReleaseSpare();
        }
    }

    /// <summary>
    /// Reads a WRITE's payload. A payload up to one chunk is written in parallel; a larger one is streamed here.
    /// The request holds a slot and a pending count from the moment the receive loop took it: every way out of here,
    /// a failure at any await included, either hands both to <see cref="Dispatch"/> or gives them back (a failed
    /// uncork must not leak the count: the connection would then wait for it for ever).
    /// </summary>
    private async ValueTask ReceiveWriteAsync(NbdRequest request, CancellationToken abort)
    {
        var length = (int)request.Length;
        if (length > ChunkSize)
        {
            await ReceiveStreamedWriteAsync(request, length, abort);
            return;
        }
        byte[]? buffer = null;
        PayloadPipe? pipe = null;
        var reserved = 0;
        try
        {
            if (_reader.Buffered < length)
            {
                // The payload is still on its way: do not keep gathered replies waiting for it.
                await _writer.UncorkAsync(abort);
            }
            reserved = await ReserveAsync(length, abort);
            var got = 0;
            if (length >= SpliceMinimum && !_noSplice && _context.Options.PayloadPipes && _reader.CanSplice && _session.Backend.TakesSplice)
            {
                pipe = PayloadPipes.TryRent(reserved);
            }
            if (pipe is not null)
            {
                got = await _reader.ReadIntoPipeAsync(pipe, length, abort);
                if (got < length)
                {
                    // The pipe filled early: segments smaller than a page take a slot each.
                    _noSplice = true;
                    PayloadPipes.NoteFilledEarly();
                    buffer = TakeBuffer(reserved);
                    pipe.DrainInto(buffer);
                    PayloadPipes.Return(pipe);
                    pipe = null;
                }
            }
            else
            {
                buffer = TakeBuffer(reserved);
            }
            if (buffer is not null)
            {
                await _reader.ReadExactlyAsync(buffer.AsMemory(got, length - got), abort);
            }
        }
        catch
        {
            Release(new Payload(buffer, pipe, reserved));
            CompleteRequest();
            throw;
        }
        Dispatch(request, new Payload(buffer, pipe, reserved));
    }

    private async ValueTask ReceiveStreamedWriteAsync(NbdRequest request, int length, CancellationToken abort)
    {
        byte[]? chunk = null;
        var size = 0;
        var errno = 0;
        try
        {
            if (_reader.Buffered < length)
            {
                await _writer.UncorkAsync(abort);
            }
            (chunk, size) = await RentAsync(ChunkSize, abort);
            for (var done = 0; done < length;)
            {
                var n = Math.Min(ChunkSize, length - done);
                await ThrottleAsync(n, abort);
                await _reader.ReadExactlyAsync(chunk.AsMemory(0, n), abort);
                if (errno == 0)
                {
                    // FUA is applied once, after the last piece.
                    var (backend, at, piece) = (_session.Backend, (long)request.Offset + done, chunk.AsMemory(0, n));
                    errno = await OffLoopAsync(() => Write(backend, at, piece.Span, fua: false), backend.WritesMayWait);
                }
                done += n;
            }
            if (errno == 0 && (request.Flags & NbdCommandFlags.Fua) != 0)
            {
                errno = await OffLoopAsync(_session.Backend.Flush, mayWait: true);
            }
            await ReplyAsync(request, errno, abort);
        }
        finally
        {
            if (chunk is not null)
            {
                Return(chunk, size);
            }
            CompleteRequest();
        }
    }

    /// <summary>
    /// Runs a request. It runs inline, on the receive loop, when it cannot wait for storage: a read of at most
    /// <see cref="InlineLimit"/> whose data is in memory, or a write without FUA (its payload, at most one chunk, is
    /// already read; it lands in the page cache) to a file in memory unless it is larger than <see cref="InlineLimit"/>
    /// and would allocate (<see cref="RunsInline"/>), or of at most <see cref="InlineLimit"/> to a disk-backed file while
    /// the kernel is not throttling writers (<see cref="WriteStalls"/>). Anything else — a read that would go to the disk, flush, FUA, trim,
    /// zeroing — goes to the thread pool, so slow storage never stalls the receive loop: on a plain socket that loop runs
    /// on an event loop thread that serves other clients too. Over other streams (in-memory pipes, and TLS when no event
    /// loop is under it) the receive loop is a thread-pool thread of its own, and the only request in flight runs inline
    /// whatever it is (lowest latency at queue depth 1). Inline requests of one burst reply into the corked
    /// <see cref="ReplyWriter"/>: no thread hand-off, one write per burst.
    /// </summary>
    private void Dispatch(NbdRequest request, Payload? payload)
    {
        if (RunsInline(request) || (_loop is null && Volatile.Read(ref _pending) <= 2))
        {
            _ = ExecuteAsync(request, payload);
        }
        else
        {
            ThreadPool.UnsafeQueueUserWorkItem(static state => _ = state.Loop.ExecuteAsync(state.Request, state.Payload), (Loop: this, Request: request, Payload: payload), preferLocal: false);
        }
    }

    /// <summary>
    /// Storage work of the receive loop itself (a streamed large write): what may wait for a disk runs on the thread pool
    /// when the caller is an event loop's thread, which serves other clients too (the same rule as <see cref="RunsInline"/>).
    /// </summary>
    private ValueTask<int> OffLoopAsync(Func<int> work, bool mayWait) =>
        mayWait && _loop?.IsOnLoop == true ? new(Task.Run(work)) : new(work());

    /// <summary>
    /// Every write of WRITE data to the backend. A write to disk-backed storage is timed: one that only had to copy into
    /// the page cache is quick, a slow one tells the next small writes to stay off the event loops (FUA writes wait
    /// for the disk by design and say nothing about throttling). The bytes written are counted here, once.
    /// </summary>
    private int Write(BlockBackend backend, long offset, ReadOnlySpan<byte> data, bool fua) => Write(backend, offset, data, null, data.Length, fua);

    private int Write(BlockBackend backend, long offset, Payload payload, int length, bool fua) =>
        Write(backend, offset, payload.Buffer is { } buffer ? buffer.AsSpan(0, length) : default, payload.Pipe, length, fua);

    /// <summary>The one write: <paramref name="length"/> bytes from <paramref name="data"/>, or from <paramref name="pipe"/> when given.</summary>
    private int Write(BlockBackend backend, long offset, ReadOnlySpan<byte> data, PayloadPipe? pipe, int length, bool fua)
    {
        var timed = backend.WritesMayWait && !fua;
        var started = timed ? System.Diagnostics.Stopwatch.GetTimestamp() : 0;
        var errno = pipe is null ? backend.Write(offset, data, fua) : WriteFromPipe(backend, offset, pipe, length, fua);
        if (timed)
        {
            _context.WriteStalls.Note(started);
        }
        if (errno == 0)
        {
            Interlocked.Add(ref _bytesWritten, length);
        }
        return errno;
    }

    /// <summary>A payload that waits in a pipe goes to the file by splice; where the file takes none after all (the
    /// backend then says so for good), it comes out of the pipe and is written as any other.</summary>
    private static int WriteFromPipe(BlockBackend backend, long offset, PayloadPipe pipe, int length, bool fua)
    {
        var errno = backend.WriteFromPipe(offset, pipe.ReadEnd, length, fua, out var moved);
        pipe.Held -= moved;
        if (errno != LinuxFile.EINVAL || moved != 0)
        {
            return errno;
        }
        var buffer = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            pipe.DrainInto(buffer);
            return backend.Write(offset, buffer.AsSpan(0, length), fua);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
        }
    }

    /// <summary>Requests a receive loop handles on an event loop before it gives way, if its socket never ran dry.</summary>
    private const int RequestsPerTurn = 32;

    /// <summary>Reads up to this size may run on the receive loop (see <see cref="Dispatch"/>).</summary>
    private const int InlineLimit = 64 * 1024;

    private bool RunsInline(NbdRequest request) => request.Command switch
    {
        NbdCommand.Read => request.Length <= InlineLimit && _session.Backend.IsInMemory((long)request.Offset, (int)request.Length),
        // Only writes of at most one chunk are dispatched at all (larger ones are streamed by the receive loop). A large
        // one to a disk-backed file goes to the thread pool: it may wait for writeback, and it takes long enough that
        // receiving the next payload meanwhile pays for the hand-off (128 KiB writes to ext4: about 15 % faster). So do
        // small ones while the kernel is throttling writers (WriteStalls). In memory, a large write where nothing was
        // written yet (a sparse swap area's fresh pages) allocates and clears pages before it copies: over twice the
        // work of a write over written pages, so it goes to the thread pool too, where the kernel shares the cores
        // between it and the loop's other clients, whose reads would otherwise wait behind it (bench/swapscale.sh,
        // holes: read p99 at 200 clients 230 ms with these writes on the loop, 43 ms off it).
        NbdCommand.Write => (request.Flags & NbdCommandFlags.Fua) == 0
            && (_session.Backend.WritesMayWait
                ? request.Length <= InlineLimit && !_context.WriteStalls.Recent
                : request.Length <= InlineLimit || !_session.Backend.WouldAllocate((long)request.Offset, (int)request.Length)),
        _ => false,
    };

    /// <summary>Waits until the client's and the server's bandwidth caps allow moving these bytes (delay, never failure).</summary>
    private async ValueTask ThrottleAsync(long bytes, CancellationToken abort)
    {
        var limits = _context.Policy.Limits;
        if (limits.BandwidthPerClient > 0)
        {
            _bandwidth ??= new Access.TokenBucket(limits.BandwidthPerClient, Math.Max(limits.BandwidthPerClient / 10, 1));
            if (_bandwidth.Rate != limits.BandwidthPerClient)
            {
                _bandwidth.Update(limits.BandwidthPerClient, Math.Max(limits.BandwidthPerClient / 10, 1));
            }
            await _bandwidth.WaitAsync(bytes, abort);
        }
        if (limits.BandwidthTotal > 0)
        {
            await _context.TotalBandwidth.WaitAsync(bytes, abort);
        }
    }

    private async Task ExecuteAsync(NbdRequest request, Payload? payload)
    {
        var abort = _abort.Token;
        try
        {
            if (request.Command is NbdCommand.Read or NbdCommand.Write)
            {
                await ThrottleAsync(request.Length, abort);
            }
            var backend = _session.Backend;
            var offset = (long)request.Offset;
            var fua = (request.Flags & NbdCommandFlags.Fua) != 0;
            int errno;
            switch (request.Command)
            {
                case NbdCommand.Read:
                    await ExecuteReadAsync(request, abort);
                    return;
                case NbdCommand.BlockStatus:
                    await ExecuteBlockStatusAsync(request, abort);
                    return;
                case NbdCommand.Write:
                    errno = Write(backend, offset, payload!.Value, (int)request.Length, fua);
                    break;
                case NbdCommand.Flush:
                    errno = backend.Flush();
                    break;
                case NbdCommand.Trim:
                    errno = backend.Trim(offset, request.Length, fua);
                    break;
                case NbdCommand.WriteZeroes:
                    errno = backend.WriteZeroes(offset, request.Length,
                        mayPunch: (request.Flags & NbdCommandFlags.NoHole) == 0,
                        fast: (request.Flags & NbdCommandFlags.FastZero) != 0, fua);
                    break;
                case NbdCommand.Cache:
                    backend.Cache(offset, request.Length);
                    errno = 0;
                    break;
                default:
                    errno = LinuxFile.EINVAL;
                    break;
            }
            await ReplyAsync(request, errno, abort);
        }
        catch (Exception e) when (TransportException.IsConnectionEnd(e, _abort.Token))
        {
            // The reply could not be sent: the connection is gone; the receive loop will notice.
            _cutConnection(TransportException.CloseReason(e), e);
        }
        catch (Exception e)
        {
            ConnectionLog.UnexpectedFailure(_logger, e, Id, Client);
            _cutConnection("internal error", null);
        }
        finally
        {
            if (payload is { } held)
            {
                Release(held);
            }
            CompleteRequest();
        }
    }

    /// <summary>Descriptors one NBD_CMD_BLOCK_STATUS reply carries at most: a request for more is answered in part, and the
    /// client asks again from where the reply stopped (spec: the server MAY send fewer).</summary>
    private const int MaxBlockDescriptors = 1024;

    /// <summary>
    /// NBD_CMD_BLOCK_STATUS on base:allocation: one NBD_REPLY_TYPE_BLOCK_STATUS chunk (the only context) with the
    /// extents from the request's offset on, holes as HOLE|ZERO; with NBD_CMD_FLAG_REQ_ONE, one extent.
    /// </summary>
    private async ValueTask ExecuteBlockStatusAsync(NbdRequest request, CancellationToken abort)
    {
        var extents = new List<NbdBlockDescriptor>();
        var one = (request.Flags & NbdCommandFlags.ReqOne) != 0;
        _session.Backend.DescribeAllocation((long)request.Offset, request.Length, one ? 1 : MaxBlockDescriptors, extents);
        await _writer.SendBlockStatusAsync(request.Cookie, _session.AllocationContext, extents, abort);
    }

    /// <summary>
    /// NBD_CMD_READ, by the cheapest of its paths: straight from the file (sendfile), a simple reply, one unfragmented
    /// chunk (NBD_CMD_FLAG_DF), or chunks with holes left out. Each says whether all the data went out; the bytes are
    /// counted here, once.
    /// </summary>
    private async ValueTask ExecuteReadAsync(NbdRequest request, CancellationToken abort)
    {
        var length = (int)request.Length;
        bool sent;
        if (length >= ReplyWriter.CoalesceLimit && length <= ChunkSize && _writer.CanSendFile && _session.Backend.DirectFile is { } file)
        {
            sent = await SendReadFromFileAsync(request, file, abort);
        }
        else
        {
            var (buffer, reserved) = await RentAsync(Math.Min(length, ChunkSize), abort);
            try
            {
                sent = !_session.StructuredReplies ? await SimpleReadAsync(request, buffer, abort)
                    : (request.Flags & NbdCommandFlags.DontFragment) != 0 ? await UnfragmentedReadAsync(request, buffer, abort)
                    : await StructuredReadAsync(request, buffer, abort);
            }
            finally
            {
                Return(buffer, reserved);
            }
        }
        if (sent)
        {
            Interlocked.Add(ref _bytesRead, length);
        }
    }

    /// <summary>
    /// A read answered straight from the export's file (sendfile: no copy through a buffer here), with the same chunks
    /// as the buffered paths: a hole chunk for a range that is all hole, else at most one hole chunk and one data chunk
    /// (none split when the client asked for NBD_CMD_FLAG_DF). A failure once the header is out cuts the connection,
    /// as the spec asks of a simple reply; it needs a read error of data the page cache holds.
    /// </summary>
    private async ValueTask<bool> SendReadFromFileAsync(NbdRequest request, SafeHandle file, CancellationToken abort)
    {
        var length = (int)request.Length;
        var start = (long)request.Offset;
        var end = start + length;
        // What is sent from the file: the area's statistics count it, as the buffered paths do (holes are not read).
        var fromFile = length;
        if (!_session.StructuredReplies)
        {
            await _writer.SendSimpleFromFileAsync(request.Cookie, file, start, length, abort);
        }
        else
        {
            TryFindData(start, end, length, out var dataStart);
            if (dataStart == end)
            {
                await _writer.SendOffsetHoleAsync(request.Cookie, request.Offset, request.Length, done: true, abort);
                fromFile = 0;
            }
            else if (dataStart > start && (request.Flags & NbdCommandFlags.DontFragment) == 0)
            {
                fromFile = (int)(end - dataStart);
                await _writer.SendOffsetHoleAsync(request.Cookie, request.Offset, (uint)(dataStart - start), done: false, abort);
                await _writer.SendOffsetDataFromFileAsync(request.Cookie, file, dataStart, fromFile, done: true, abort);
            }
            else
            {
                await _writer.SendOffsetDataFromFileAsync(request.Cookie, file, start, length, done: true, abort);
            }
        }
        _session.Backend.OnDirectRead(fromFile);
        return true;
    }

    private async ValueTask<bool> SimpleReadAsync(NbdRequest request, byte[] buffer, CancellationToken abort)
    {
        var length = (int)request.Length;
        var first = Math.Min(length, buffer.Length);
        var errno = ReadBackend(request, 0, buffer.AsSpan(0, first));
        if (errno != 0)
        {
            await SendErrorAsync(request, errno, abort);
            return false;
        }
        if (first == length)
        {
            await _writer.SendSimpleAsync(request.Cookie, NbdError.None, buffer.AsMemory(0, length), abort);
            return true;
        }
        using (await _writer.BeginSimpleDataAsync(request.Cookie, buffer.AsMemory(0, first), abort))
        {
            for (var done = first; done < length;)
            {
                var n = Math.Min(buffer.Length, length - done);
                if (ReadBackend(request, done, buffer.AsSpan(0, n)) != 0)
                {
                    // The header already said success: the spec requires a hard disconnect now.
                    _cutConnection("read error after reply header was sent", null);
                    return false;
                }
                await _writer.WriteRawLockedAsync(buffer.AsMemory(0, n), abort);
                done += n;
            }
        }
        return true;
    }

    private async ValueTask<bool> UnfragmentedReadAsync(NbdRequest request, byte[] buffer, CancellationToken abort)
    {
        var length = (int)request.Length;
        if (TryFindData((long)request.Offset, (long)request.Offset + length, length, out var dataStart)
            && dataStart == (long)request.Offset + length)
        {
            await _writer.SendOffsetHoleAsync(request.Cookie, request.Offset, request.Length, done: true, abort);
            return true;
        }
        var first = Math.Min(length, buffer.Length);
        var failed = ReadBackend(request, 0, buffer.AsSpan(0, first));
        if (failed == 0 && first == length)
        {
            await _writer.SendOffsetDataAsync(request.Cookie, request.Offset, buffer.AsMemory(0, length), done: true, abort);
            return true;
        }
        if (failed == 0)
        {
            // One content chunk streamed in pieces. An error after it started is reported after padding it with zeros.
            using (await _writer.BeginOffsetDataAsync(request.Cookie, request.Offset, length, buffer.AsMemory(0, first), abort))
            {
                for (var done = first; done < length;)
                {
                    var n = Math.Min(buffer.Length, length - done);
                    if (failed == 0)
                    {
                        failed = ReadBackend(request, done, buffer.AsSpan(0, n));
                    }
                    if (failed != 0)
                    {
                        buffer.AsSpan(0, n).Clear();
                    }
                    await _writer.WriteRawLockedAsync(buffer.AsMemory(0, n), abort);
                    done += n;
                }
            }
        }
        if (failed != 0)
        {
            await SendErrorAsync(request, failed, abort);
            return false;
        }
        await _writer.SendStructuredNoneAsync(request.Cookie, abort);
        return true;
    }

    private async ValueTask<bool> StructuredReadAsync(NbdRequest request, byte[] buffer, CancellationToken abort)
    {
        var start = (long)request.Offset;
        var end = start + request.Length;
        var detectHoles = true;
        for (var position = start; position < end;)
        {
            if (detectHoles)
            {
                if (!TryFindData(position, end, request.Length, out var dataStart))
                {
                    detectHoles = false;
                }
                else if (dataStart > position)
                {
                    await _writer.SendOffsetHoleAsync(request.Cookie, (ulong)position, (uint)(dataStart - position), done: dataStart == end, abort);
                    position = dataStart;
                    continue;
                }
            }
            var n = (int)Math.Min(end - position, buffer.Length);
            var errno = ReadBackend(request, (int)(position - start), buffer.AsSpan(0, n));
            if (errno != 0)
            {
                await SendErrorAsync(request, errno, abort, $" at offset {position}");
                return false;
            }
            await _writer.SendOffsetDataAsync(request.Cookie, (ulong)position, buffer.AsMemory(0, n), done: position + n == end, abort);
            position += n;
        }
        return true;
    }

    /// <summary>
    /// The one hole detection of reads: where data starts in [<paramref name="start"/>, <paramref name="end"/>) (end:
    /// all of it is a hole). False, with <paramref name="dataStart"/> at start, when it is not worth asking (a read under
    /// <see cref="HoleDetectionThreshold"/>: the lseek would cost more than the hole saves) or the file system cannot tell.
    /// </summary>
    private bool TryFindData(long start, long end, long requestLength, out long dataStart)
    {
        dataStart = start;
        return requestLength >= HoleDetectionThreshold && _session.Backend.TryFindData(start, end, out dataStart);
    }

    private int ReadBackend(NbdRequest request, int skip, Span<byte> destination)
    {
        var errno = _session.Backend.Read((long)request.Offset + skip, destination);
        if (errno != 0)
        {
            LogFailure(request, errno);
        }
        return errno;
    }

    /// <summary>Answers a finished request that carries no data back (everything but READ and BLOCK_STATUS).</summary>
    private ValueTask ReplyAsync(NbdRequest request, int errno, CancellationToken abort)
    {
        if (errno == 0)
        {
            return _writer.SendSimpleAsync(request.Cookie, NbdError.None, default, abort);
        }
        LogFailure(request, errno);
        return SendErrorAsync(request, errno, abort);
    }

    /// <summary>The reply of a request the backend failed (the failure is logged where it happened).</summary>
    private ValueTask SendErrorAsync(NbdRequest request, int errno, CancellationToken abort, string where = "") =>
        SendErrorAsync(request, MapErrno(errno), $"{request.Command} failed{where}: errno {errno}", abort);

    /// <summary>An error reply: a structured error chunk (with a message) once negotiated, else a simple reply.</summary>
    private ValueTask SendErrorAsync(NbdRequest request, NbdError error, string message, CancellationToken abort) =>
        _session.StructuredReplies
            ? _writer.SendErrorChunkAsync(request.Cookie, error, message, abort)
            : _writer.SendSimpleAsync(request.Cookie, error, default, abort);

    private void LogFailure(NbdRequest request, int errno) =>
        ConnectionLog.RequestFailed(_logger, Id, Client, request.Command, request.Offset, request.Length, errno,
            Marshal.GetPInvokeErrorMessage(errno), MapErrno(errno));

    /// <summary>Host errno to the spec's error values ("Error values": EDQUOT and EFBIG become ENOSPC).</summary>
    internal static NbdError MapErrno(int errno) => errno switch
    {
        LinuxFile.EPERM or LinuxFile.EROFS or 13 /* EACCES */ => NbdError.Perm,
        LinuxFile.ENOSPC or LinuxFile.EDQUOT or LinuxFile.EFBIG => NbdError.NoSpc,
        LinuxFile.EINVAL => NbdError.Inval,
        LinuxFile.EOPNOTSUPP => NbdError.NotSup,
        12 /* ENOMEM */ => NbdError.NoMem,
        _ => NbdError.IO,
    };

    /// <summary>
    /// Takes a payload buffer from the connection's budget and then the server's (payload-memory): a power of two, as
    /// the pool hands them out. Waiting for the server's share holds only this connection's own.
    /// </summary>
    private async ValueTask<(byte[] Buffer, int Reserved)> RentAsync(int length, CancellationToken abort)
    {
        var reserved = await ReserveAsync(length, abort);
        return (TakeBuffer(reserved), reserved);
    }

    /// <summary>Holds room for a payload of <paramref name="length"/> in both budgets: a power of two (the pool's sizes),
    /// which it returns. A payload in a pipe counts as one in a buffer: it is memory held for a client all the same.</summary>
    private async ValueTask<int> ReserveAsync(int length, CancellationToken abort)
    {
        var reserved = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(length, 16));
        await _budget.AcquireAsync(reserved, abort);
        try
        {
            await _context.PayloadMemory.AcquireAsync(reserved, abort);
        }
        catch
        {
            _budget.Release(reserved);
            throw;
        }
        return reserved;
    }

    private void Unreserve(int reserved)
    {
        _budget.Release(reserved);
        _context.PayloadMemory.Release(reserved);
    }

    /// <summary>A buffer of <paramref name="reserved"/> bytes (already reserved): the connection's spare if it is large enough.</summary>
    private byte[] TakeBuffer(int reserved)
    {
        if (Interlocked.Exchange(ref _spare, null) is { } spare)
        {
            if (spare.Length >= reserved)
            {
                return spare;
            }
            ClearAndReturn(spare);
        }
        return PayloadBuffers.Rent(reserved);
    }

    /// <summary>Gives back whatever a payload holds: its reservation, its pipe (kept when empty), its buffer.</summary>
    private void Release(Payload payload)
    {
        if (payload.Buffer is { } buffer)
        {
            Return(buffer, payload.Reserved);
        }
        else if (payload.Reserved > 0)
        {
            Unreserve(payload.Reserved);
        }
        if (payload.Pipe is { } pipe)
        {
            PayloadPipes.Return(pipe);
        }
    }

    /// <summary>
    /// Gives a payload buffer back. On the event loop's thread the last one is kept as this connection's spare while
    /// the loop is busy: it holds only this client's own data, so the next request can use it without clearing it
    /// (clearing 128 KiB per request cost a fifth of the CPU time of a 128 KiB write). When the loop has nothing left to
    /// do, the spare is cleared and goes back to the shared pool (<see cref="OnLoopIdle"/>), so an idle connection holds
    /// no buffer. Anywhere else the buffer is cleared and returned at once.
    /// </summary>
    private void Return(byte[] buffer, int reserved)
    {
        Unreserve(reserved);
        if (_loop is { IsOnLoop: true } loop && Interlocked.CompareExchange(ref _spare, buffer, null) is null)
        {
            if (!_spareQueued)
            {
                // Loop thread only: no race on the flag.
                _spareQueued = true;
                loop.WhenIdle(this);
            }
            return;
        }
        ClearAndReturn(buffer);
    }

    /// <summary>Cleared before another client can be handed it: swap pages hold other people's secrets.</summary>
    private static void ClearAndReturn(byte[] buffer) => PayloadBuffers.ClearAndReturn(buffer);

    /// <summary>The event loop is going to sleep: the spare goes back to the pool, cleared.</summary>
    public void OnLoopIdle()
    {
        _loop?.AssertOnLoop("a connection's spare-buffer flag");
        _spareQueued = false;
        ReleaseSpare();
    }

    public void ReleaseSpare()
    {
        if (Interlocked.Exchange(ref _spare, null) is { } spare)
        {
            ClearAndReturn(spare);
        }
    }

    /// <summary>Ends one request: frees its slot for the next one.</summary>
    private void CompleteRequest()
    {
        _slots.Release();
        EndPending();
    }

    private void EndPending()
    {
        if (Interlocked.Decrement(ref _pending) == 0)
        {
            _idle.TrySetResult();
        }
    }
}
