using System.Collections.Concurrent;
using System.Diagnostics;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Tests.Support;

/// <summary>
/// One pipelining client of the stress harness: keeps up to <see cref="InFlight"/> requests outstanding, a seeded random
/// mix of small and large READ, WRITE (with and without FUA), FLUSH, TRIM and WRITE_ZEROES, over its own region of the
/// export. Every READ is checked against a shadow model of that region; requests in flight never overlap, so the model
/// is exact whatever order the server runs them in. A watchdog fails the run, naming the seed and the cookies, when any
/// request stays unanswered longer than <see cref="Stall"/>.
/// </summary>
public sealed class StressClient
{
    private const int Block = 4096;

    private readonly TestNbdClient _client;
    private readonly ulong _regionStart;
    private readonly int _regionLength;
    private readonly int _seed;
    private readonly Random _random;
    // The region as the server must have it; a block trimmed is unknown until written again (TRIM's content is undefined).
    private readonly byte[] _model;
    private readonly bool[] _known;
    // Blocks some request in flight touches (sender reserves, receiver frees).
    private readonly bool[] _busy;
    private readonly Lock _gate = new();
    private readonly ConcurrentDictionary<ulong, Outstanding> _outstanding = new();
    private readonly SemaphoreSlim _window;
    private long _answered;

    private sealed record Outstanding(NbdCommand Command, int Start, int Length, long SentAt, byte[]? Expected, bool[]? KnownMask);

    public StressClient(TestNbdClient client, ulong regionStart, int regionLength, int seed, int inFlight = 64)
    {
        _client = client;
        _regionStart = regionStart;
        _regionLength = regionLength;
        _seed = seed;
        _random = new Random(seed);
        _model = new byte[regionLength];
        _known = new bool[regionLength / Block];
        _busy = new bool[regionLength / Block];
        InFlight = inFlight;
        _window = new SemaphoreSlim(inFlight);
    }

    public int InFlight { get; }
    public static TimeSpan Stall { get; set; } = TimeSpan.FromSeconds(2);
    public long Answered => Interlocked.Read(ref _answered);

    /// <summary>Sends and checks requests until <paramref name="duration"/> is over, then waits for every reply.</summary>
    public async Task RunAsync(TimeSpan duration)
    {
        using var stop = new CancellationTokenSource();
        var receiver = Task.Run(ReceiveAllAsync);
        _receiver = receiver;
        var watchdog = Task.Run(() => WatchAsync(receiver, stop.Token));
        var until = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        try
        {
            while (Stopwatch.GetTimestamp() < until && !receiver.IsCompleted)
            {
                if (!await _window.WaitAsync(Stall * 2))
                {
                    throw Stalled("the window never opened");
                }
                await SendOneAsync();
            }
            // Everything sent must be answered.
            for (var i = 0; i < InFlight; i++)
            {
                if (!await _window.WaitAsync(Stall * 2))
                {
                    throw Stalled("replies missing at the end");
                }
            }
        }
        finally
        {
            stop.Cancel();
            _closing = true;
        }
        await watchdog;
        // The receiver ends when the client is disposed by the caller; a failure it met is already thrown by the watchdog.
        if (receiver.IsFaulted)
        {
            await receiver;
        }
    }

    private volatile bool _closing;
    private Task? _receiver;

    private Exception Stalled(string what)
    {
        var now = Stopwatch.GetTimestamp();
        var old = _outstanding.OrderBy(o => o.Value.SentAt).Take(8)
            .Select(o => $"{o.Key}:{o.Value.Command}@{o.Value.Start}+{o.Value.Length} ({(now - o.Value.SentAt) * 1000 / Stopwatch.Frequency} ms)");
        if (_receiver is { IsFaulted: true } failed)
        {
            return new InvalidOperationException($"seed {_seed}: the reply reader failed", failed.Exception!.InnerException);
        }
        return new TimeoutException($"seed {_seed}: {what}; {_outstanding.Count} unanswered after {Answered} answers, oldest: {string.Join(", ", old)}");
    }

    private async Task WatchAsync(Task receiver, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            if (receiver.IsFaulted)
            {
                await receiver;
            }
            var now = Stopwatch.GetTimestamp();
            foreach (var o in _outstanding.Values)
            {
                if (now - o.SentAt > Stall.TotalSeconds * Stopwatch.Frequency)
                {
                    throw Stalled($"a request has waited more than {Stall.TotalMilliseconds} ms");
                }
            }
            try
            {
                await Task.Delay(100, stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Reads replies as the spec allows them to arrive: simple replies, and structured chunks of different requests
    /// interleaved (a READ's hole chunk, then another request's reply, then the READ's data chunk); assembled by cookie.
    /// </summary>
    private async Task ReceiveAllAsync()
    {
        var stream = _client.Stream;
        var partial = new Dictionary<ulong, (byte[] Data, NbdError Error, string? Message)>();
        var header = new byte[NbdStructuredReplyHeader.Size];
        while (true)
        {
            try
            {
                await stream.ReadExactlyAsync(header.AsMemory(0, 4));
            }
            catch (Exception) when (_closing)
            {
                return;
            }
            var magic = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(header);
            ulong cookie;
            NbdError error;
            string? message = null;
            byte[]? data = null;
            if (magic == NbdMagic.SimpleReply)
            {
                await stream.ReadExactlyAsync(header.AsMemory(4, NbdSimpleReply.Size - 4));
                Assert.True(NbdSimpleReply.TryRead(header.AsSpan(0, NbdSimpleReply.Size), out var simple));
                cookie = simple.Cookie;
                error = simple.Error;
                if (!_outstanding.TryGetValue(cookie, out var sent))
                {
                    throw new InvalidOperationException($"seed {_seed}: a reply for cookie {cookie}, which is not outstanding");
                }
                if (sent.Command == NbdCommand.Read && error == NbdError.None)
                {
                    data = new byte[sent.Length];
                    await stream.ReadExactlyAsync(data);
                }
            }
            else
            {
                if (magic != NbdMagic.StructuredReply)
                {
                    throw new InvalidOperationException($"seed {_seed}: bad reply magic 0x{magic:x8} after {Answered} answers");
                }
                await stream.ReadExactlyAsync(header.AsMemory(4));
                Assert.True(NbdStructuredReplyHeader.TryRead(header, out var chunk));
                cookie = chunk.Cookie;
                if (!_outstanding.TryGetValue(cookie, out var sent))
                {
                    throw new InvalidOperationException($"seed {_seed}: a chunk for cookie {cookie}, which is not outstanding");
                }
                var payload = new byte[chunk.Length];
                await stream.ReadExactlyAsync(payload);
                if (!partial.TryGetValue(cookie, out var so))
                {
                    so = (new byte[sent.Length], NbdError.None, null);
                }
                switch (chunk.Type)
                {
                    case NbdReplyType.OffsetData:
                        var at = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(payload) - (long)_regionStart - sent.Start;
                        Assert.InRange(at, 0, sent.Length - (payload.Length - 8));
                        payload.AsSpan(8).CopyTo(so.Data.AsSpan((int)at));
                        break;
                    case NbdReplyType.OffsetHole:
                        Assert.True(NbdChunk.TryReadOffsetHole(payload, out var holeOffset, out var holeLength));
                        var hole = (long)holeOffset - (long)_regionStart - sent.Start;
                        Assert.InRange(hole, 0, sent.Length - holeLength);
                        so.Data.AsSpan((int)hole, (int)holeLength).Clear();
                        break;
                    case NbdReplyType.None:
                        break;
                    default:
                        Assert.True(chunk.IsError, $"seed {_seed}: unexpected chunk type {chunk.Type}");
                        Assert.True(NbdChunk.TryReadError(payload, out var chunkError, out var text));
                        so = (so.Data, chunkError, text);
                        break;
                }
                if ((chunk.Flags & NbdReplyFlags.Done) == 0)
                {
                    partial[cookie] = so;
                    continue;
                }
                partial.Remove(cookie);
                (data, error, message) = so;
            }
            if (!_outstanding.TryRemove(cookie, out var o))
            {
                throw new InvalidOperationException($"seed {_seed}: a reply for cookie {cookie}, which is not outstanding");
            }
            if (error != NbdError.None)
            {
                throw new InvalidOperationException($"seed {_seed}: {o.Command} at {o.Start}+{o.Length} failed: {error} {message}");
            }
            if (o.Command == NbdCommand.Read)
            {
                for (var i = 0; i < o.Length; i++)
                {
                    if (o.KnownMask![i / Block] && data![i] != o.Expected![i])
                    {
                        throw new InvalidOperationException($"seed {_seed}: READ at {o.Start}+{o.Length} differs from the model at byte {i}");
                    }
                }
            }
            lock (_gate)
            {
                _busy.AsSpan(o.Start / Block, (o.Length + Block - 1) / Block).Clear();
            }
            Interlocked.Increment(ref _answered);
            _window.Release();
        }
    }

    private async Task SendOneAsync()
    {
        var roll = _random.Next(100);
        var command = roll switch
        {
            < 45 => NbdCommand.Read,
            < 88 => NbdCommand.Write,
            < 92 => NbdCommand.Flush,
            < 96 => NbdCommand.Trim,
            _ => NbdCommand.WriteZeroes,
        };
        // Mostly one page (swap), sometimes up to 128 KiB, now and then past the server's 256 KiB chunk (streamed).
        var blocks = _random.Next(100) switch
        {
            < 70 => 1,
            < 95 => _random.Next(2, 33),
            _ => _random.Next(33, 97),
        };
        int start;
        lock (_gate)
        {
            start = -1;
            for (var attempt = 0; attempt < 16 && start < 0; attempt++)
            {
                var first = _random.Next(0, _busy.Length - blocks + 1);
                if (!_busy.AsSpan(first, blocks).Contains(true))
                {
                    start = first;
                }
            }
            if (start < 0)
            {
                command = NbdCommand.Flush;
            }
            else if (command != NbdCommand.Flush)
            {
                _busy.AsSpan(start, blocks).Fill(true);
            }
        }
        var offset = command == NbdCommand.Flush ? 0 : start * Block;
        var length = command == NbdCommand.Flush ? 0 : blocks * Block;
        var flags = (NbdCommandFlags)0;
        byte[]? payload = null, expected = null;
        bool[]? known = null;
        switch (command)
        {
            case NbdCommand.Write:
                payload = new byte[length];
                _random.NextBytes(payload);
                payload.CopyTo(_model, offset);
                _known.AsSpan(offset / Block, blocks).Fill(true);
                if (_random.Next(4) == 0)
                {
                    flags |= NbdCommandFlags.Fua;
                }
                break;
            case NbdCommand.Read:
                expected = _model.AsSpan(offset, length).ToArray();
                known = _known.AsSpan(offset / Block, blocks).ToArray();
                break;
            case NbdCommand.Trim:
                _known.AsSpan(offset / Block, blocks).Clear();
                break;
            case NbdCommand.WriteZeroes:
                _model.AsSpan(offset, length).Clear();
                _known.AsSpan(offset / Block, blocks).Fill(true);
                break;
        }
        var cookie = unchecked((ulong)Interlocked.Increment(ref s_cookie));
        _outstanding[cookie] = new Outstanding(command, offset, length, Stopwatch.GetTimestamp(), expected, known);
        await _client.SendRequestAsync(command, command == NbdCommand.Flush ? 0 : _regionStart + (ulong)offset, (uint)length, flags, payload, cookie);
    }

    private static long s_cookie;

    /// <summary>Runs <paramref name="clients"/> at once and fails with the first one that failed.</summary>
    public static async Task RunAllAsync(IEnumerable<StressClient> clients, TimeSpan duration)
    {
        var runs = clients.Select(c => Task.Run(() => c.RunAsync(duration))).ToArray();
        await Task.WhenAll(runs);
    }
}
