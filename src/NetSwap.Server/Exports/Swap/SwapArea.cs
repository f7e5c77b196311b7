using System.Diagnostics;
using System.Net;
using Microsoft.Win32.SafeHandles;

namespace NetSwap.Server.Exports.Swap;

internal enum SwapAreaState
{
    Attached,
    Grace,
    Destroyed,
}

/// <summary>
/// One client's swap space: a nameless file, its size, who owns it, and its state. Its life:
/// <code>
///   created (attached) ──release, no token or clean──────────────▶ destroyed
///        │   ▲                                                      ▲
///   release  └──reattach (same token and address, before expiry)   │
///        ▼                                                          │
///      grace ──────────────────────expire (grace timer)────────────┘
/// </code>
/// Every transition is a method here, and is called only by <see cref="SwapAreaRegistry"/> under its one lock, which
/// also keeps the indexes (by id, by token) and the budget that the transitions change.
/// </summary>
internal sealed class SwapArea
{
    public SwapArea(long id, string export, string? token, IPAddress? address, string client, long size, SafeFileHandle handle, long reserved)
    {
        Id = id;
        Export = export;
        Token = token;
        Address = address;
        Client = client;
        Size = size;
        Handle = handle;
        Reserved = reserved;
        CreatedAt = DateTimeOffset.UtcNow;
        AttachedAt = CreatedAt;
        _written = new long[(((size + ChunkSize - 1) >> ChunkShift) + 63) / 64];
        if (reserved > 0)
        {
            // Fallocated: every block is there already.
            Array.Fill(_written, -1L);
        }
    }

    private const int ChunkShift = 17;
    private const long ChunkSize = 1L << ChunkShift;
    // One bit per 128 KiB of the area: set once a write has landed in it (or the area was fallocated), cleared when a
    // hole is punched over all of it. A sparse area's first write into a chunk allocates and clears pages before it
    // copies; the request loop keeps such writes off its event loop. Asking the file instead (SEEK_HOLE) walks the
    // page cache up to the next hole: on a written 16 MiB tmpfs area that cost more than the write itself.
    private readonly long[] _written;

    /// <summary>Whether a write of the range may land where nothing was written yet (so it allocates storage).</summary>
    public bool MayAllocate(long offset, long length)
    {
        for (var chunk = offset >> ChunkShift; chunk <= (offset + length - 1) >> ChunkShift; chunk++)
        {
            if ((Volatile.Read(ref _written[chunk >> 6]) & (1L << (int)(chunk & 63))) == 0)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>A write landed in the range: its chunks hold data now.</summary>
    public void MarkWritten(long offset, long length)
    {
        for (var chunk = offset >> ChunkShift; chunk <= (offset + length - 1) >> ChunkShift; chunk++)
        {
            var bit = 1L << (int)(chunk & 63);
            if ((Volatile.Read(ref _written[chunk >> 6]) & bit) == 0)
            {
                Interlocked.Or(ref _written[chunk >> 6], bit);
            }
        }
    }

    /// <summary>A hole was punched over the range: chunks wholly inside it are empty again.</summary>
    public void MarkPunched(long offset, long length)
    {
        for (var chunk = (offset + ChunkSize - 1) >> ChunkShift; (chunk + 1) << ChunkShift <= offset + length; chunk++)
        {
            Interlocked.And(ref _written[chunk >> 6], ~(1L << (int)(chunk & 63)));
        }
    }

    public long Id { get; }
    public string Export { get; }
    public string? Token { get; }
    public IPAddress? Address { get; }
    public string Client { get; private set; }
    public long Size { get; }
    public SafeFileHandle Handle { get; }
    /// <summary>Bytes fallocated for the area at creation (reserve mode), 0 when sparse.</summary>
    public long Reserved { get; }
    public DateTimeOffset CreatedAt { get; }
    public DateTimeOffset AttachedAt { get; private set; }
    public SwapAreaState State { get; private set; } = SwapAreaState.Attached;
    /// <summary>The connection that holds the area; cut when the same client reconnects with the same token.</summary>
    public Action? AbortOwner { get; private set; }
    /// <summary>Completed when the current owner lets go (detach, or destruction).</summary>
    public TaskCompletionSource Released { get; private set; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public DateTimeOffset? GraceDeadline { get; private set; }
    private long _graceStartedTimestamp;
    private Timer? _graceTimer;
    public long BytesRead;
    public long BytesWritten;

    public double SecondsAway => Stopwatch.GetElapsedTime(_graceStartedTimestamp).TotalSeconds;

    /// <summary>Whether <paramref name="address"/> is the one that created the area (a token is only good from there).</summary>
    public bool BelongsTo(IPAddress? address) => Equals(Address, address is null ? null : Access.AddressRuleSet.Normalize(address));

    /// <summary>Created: the connection that asked for it holds it.</summary>
    internal void Attach(Action abortOwner) => AbortOwner = abortOwner;

    /// <summary>Grace → attached: the same client came back with the same token in time.</summary>
    internal void Reattach(string client, Action abortOwner)
    {
        Debug.Assert(State == SwapAreaState.Grace);
        StopGraceTimer();
        GraceDeadline = null;
        State = SwapAreaState.Attached;
        AbortOwner = abortOwner;
        Client = client;
        AttachedAt = DateTimeOffset.UtcNow;
        Released = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Attached → grace: the connection was lost; <paramref name="expire"/> runs when the grace period is over.</summary>
    internal void BeginGrace(TimeSpan grace, Action<SwapArea> expire)
    {
        Debug.Assert(State == SwapAreaState.Attached);
        AbortOwner = null;
        State = SwapAreaState.Grace;
        _graceStartedTimestamp = Stopwatch.GetTimestamp();
        GraceDeadline = DateTimeOffset.UtcNow + grace;
        _graceTimer = new Timer(static s => { var (area, expire) = ((SwapArea, Action<SwapArea>))s!; expire(area); }, (this, expire), grace, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Attached or grace → destroyed (the storage is given back by the registry, outside its lock).</summary>
    internal void MarkDestroyed()
    {
        AbortOwner = null;
        State = SwapAreaState.Destroyed;
        StopGraceTimer();
    }

    private void StopGraceTimer()
    {
        _graceTimer?.Dispose();
        _graceTimer = null;
    }
}
