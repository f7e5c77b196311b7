using System.Net;
using Microsoft.Extensions.Logging;
using NetSwap.Protocol.Nbd;
using NetSwap.Protocol.Swap;

namespace NetSwap.Server.Exports.Swap;

/// <summary>A decision about a swap request: the size it gets, or why it is refused.</summary>
internal readonly record struct SwapAdmission(long Size, NbdOptionReplyType Error, string? Reason)
{
    public bool Admitted => Reason is null;
    public static SwapAdmission Refuse(NbdOptionReplyType error, string reason) => new(0, error, reason);
}

/// <summary>
/// Every swap area that exists, and the budget they use. The budget is the sum of the sizes of areas that exist
/// (being created, attached or in grace); it changes in one place, under <see cref="_lock"/>, at admission and at
/// destruction, and is never recomputed from the file system. Lock order: <see cref="_lock"/> is a leaf; file I/O
/// and logging happen outside it.
/// </summary>
internal sealed class SwapAreaRegistry : IDisposable
{
    private readonly Lock _lock = new();
    private readonly SwapOptions _options;
    private readonly SwapDirectory _directory;
    private readonly ILogger _logger;
    private readonly Dictionary<long, SwapArea> _areas = [];
    private readonly Dictionary<string, SwapArea> _byToken = new(StringComparer.Ordinal);
    private readonly HashSet<string> _tokensBeingCreated = new(StringComparer.Ordinal);
    private long _committed;
    // Reserve mode: bytes admitted whose fallocate has not finished yet, so concurrent admissions see them.
    private long _pendingAllocation;
    private long _nextId;
    private bool _disposed;

    public SwapAreaRegistry(SwapOptions options, SwapDirectory directory, ILogger logger)
    {
        _options = options;
        _directory = directory;
        _logger = logger;
    }

    public SwapOptions Options => _options;
    public SwapDirectory Directory => _directory;

    public long Committed
    {
        get
        {
            lock (_lock)
            {
                return _committed;
            }
        }
    }

    public IReadOnlyList<SwapArea> Snapshot()
    {
        lock (_lock)
        {
            return [.. _areas.Values.OrderBy(a => a.Id)];
        }
    }

    /// <summary>What an attach would get, without allocating anything (NBD_OPT_INFO, and the first step of GO).</summary>
    public SwapAdmission Check(SwapExportName name, ConnectionInfo client)
    {
        lock (_lock)
        {
            if (name.Token is { } token && _byToken.TryGetValue(token, out var existing))
            {
                return TokenRefusal(existing, client) is { } refusal
                    ? SwapAdmission.Refuse(NbdOptionReplyType.ErrPolicy, refusal)
                    : new SwapAdmission(existing.Size, 0, null);
            }
            return CheckNewLocked(name, client);
        }
    }

    /// <summary>The one rule of token ownership: an area's token is good only from the address that created the area.</summary>
    private static string? TokenRefusal(SwapArea existing, ConnectionInfo client) =>
        existing.BelongsTo(client.Address) ? null : $"swap token '{existing.Token}' belongs to another client";

    private SwapAdmission CheckNewLocked(SwapExportName name, ConnectionInfo client)
    {
        var size = name.RequestedSize ?? _options.DefaultSizeFor(client.Address);
        // Compared before rounding up to whole pages: swap:9223372036854775807 overflowed the rounding.
        if (size <= _options.MaxSize)
        {
            size = (size + SwapHeader.PageSize - 1) / SwapHeader.PageSize * SwapHeader.PageSize;
        }
        if (size > _options.MaxSize)
        {
            return SwapAdmission.Refuse(NbdOptionReplyType.ErrTooBig, $"asked for {size} B of swap; the limit swap-max-size is {_options.MaxSize} B");
        }
        if (size < SwapHeader.MinimumSize)
        {
            return SwapAdmission.Refuse(NbdOptionReplyType.ErrInvalid, $"asked for {size} B of swap; the minimum is {SwapHeader.MinimumSize} B");
        }
        var room = RoomLocked();
        if (size > room.ByBudget)
        {
            return SwapAdmission.Refuse(NbdOptionReplyType.ErrPolicy,
                $"swap-budget exhausted: {_committed} of {_options.Budget} B in use, {size} B asked");
        }
        if (room.Unusable is { } why)
        {
            return SwapAdmission.Refuse(NbdOptionReplyType.ErrPolicy, $"swap directory unusable: {why}");
        }
        if (size > room.ByDisk)
        {
            var needed = _options.Allocation == SwapAllocation.Reserve ? size : 0;
            return SwapAdmission.Refuse(NbdOptionReplyType.ErrPolicy,
                $"swap-reserve: {room.Available - _pendingAllocation} B free on the swap file system, {needed} B asked, {room.Keep} B ({_options.ReservePercent}%) kept free");
        }
        return new SwapAdmission(size, 0, null);
    }

    /// <summary>How much a new area may take now, by each limit (under the lock): the one arithmetic of admission and discovery.</summary>
    private readonly record struct Room(long ByBudget, long ByDisk, long Total, long Available, long Keep, string? Unusable);

    private Room RoomLocked()
    {
        var byBudget = _options.Budget > 0 ? _options.Budget - _committed : long.MaxValue;
        long total, available;
        try
        {
            (total, available) = _directory.Space();
        }
        catch (IOException e)
        {
            return new Room(byBudget, 0, 0, 0, 0, e.Message);
        }
        var keep = (long)(total * _options.ReservePercent / 100);
        // Reserve: the area's blocks come out of the free space now (and those of admissions still allocating);
        // sparse: nothing is taken at attach, so any size passes while the reserve is intact.
        var free = available - _pendingAllocation - keep;
        var byDisk = _options.Allocation == SwapAllocation.Reserve ? free : free >= 0 ? long.MaxValue : -1;
        return new Room(byBudget, byDisk, total, available, keep, null);
    }

    /// <summary>
    /// What discovery tells a probing client, from the same arithmetic and the same moment as an admission: the largest
    /// area a new client would be given now (0 if none), the bytes in use, and the capacity they are a part of.
    /// </summary>
    public (long Largest, long Committed, long Capacity) Capacity()
    {
        lock (_lock)
        {
            var room = RoomLocked();
            var largest = room.Unusable is null ? Math.Min(Math.Min(room.ByBudget, room.ByDisk), _options.MaxSize) : 0;
            largest = Math.Max(0, largest / SwapHeader.PageSize * SwapHeader.PageSize);
            if (largest < SwapHeader.MinimumSize)
            {
                largest = 0;
            }
            var capacity = _options.Budget > 0 ? _options.Budget : Math.Max(1, room.Total - room.Keep);
            return (largest, _committed, capacity);
        }
    }

    /// <summary>
    /// Gives the connection its area: the one waiting out a grace period under the same token and address, or a new one.
    /// Refusals come back as an NBD option error with the limit named, before the client ever starts swapping.
    /// </summary>
    public async ValueTask<(SwapArea? Area, NbdOptionReplyType Error, string? Reason)> AttachAsync(
        SwapExportName name, string export, ConnectionInfo client, Action abortOwner, CancellationToken cancellationToken)
    {
        for (var attempt = 0; ; attempt++)
        {
            Task? previousOwnerGone = null;
            Action? abortPrevious = null;
            SwapAdmission admission;
            long id;
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (name.Token is { } token)
                {
                    if (_byToken.TryGetValue(token, out var existing))
                    {
                        if (TokenRefusal(existing, client) is { } refusal)
                        {
                            return Refused(export, client, NbdOptionReplyType.ErrPolicy, refusal);
                        }
                        if (existing.State == SwapAreaState.Grace)
                        {
                            existing.Reattach(client.RemoteAddress, abortOwner);
                            SwapLog.Reattached(_logger, existing.Id, client.RemoteAddress, export, existing.SecondsAway);
                            return (existing, 0, null);
                        }
                        // Still attached: the client reconnected before the server noticed the old connection died.
                        previousOwnerGone = existing.Released.Task;
                        abortPrevious = existing.AbortOwner;
                        SwapLog.TakingOver(_logger, existing.Id, client.RemoteAddress, export);
                    }
                    else if (!_tokensBeingCreated.Add(token))
                    {
                        return Refused(export, client, NbdOptionReplyType.ErrPolicy, $"swap token '{token}' is being attached by another connection");
                    }
                }
                if (previousOwnerGone is null)
                {
                    admission = CheckNewLocked(name, client);
                    if (!admission.Admitted)
                    {
                        ForgetToken(name.Token);
                        return Refused(export, client, admission.Error, admission.Reason!);
                    }
                    _committed += admission.Size;
                    if (_options.Allocation == SwapAllocation.Reserve)
                    {
                        _pendingAllocation += admission.Size;
                    }
                    id = ++_nextId;
                }
                else
                {
                    admission = default;
                    id = 0;
                }
            }
            if (previousOwnerGone is not null)
            {
                if (attempt > 0)
                {
                    return Refused(export, client, NbdOptionReplyType.ErrPolicy, $"swap token '{name.Token}' is still held by another connection");
                }
                // Outside the lock: aborting runs the old connection's cancellation callbacks.
                abortPrevious?.Invoke();
                await previousOwnerGone.WaitAsync(TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
                continue;
            }
            return Create(id, name, export, client, admission.Size, abortOwner);
        }
    }

    private (SwapArea?, NbdOptionReplyType, string?) Create(long id, SwapExportName name, string export, ConnectionInfo client, long size, Action abortOwner)
    {
        Microsoft.Win32.SafeHandles.SafeFileHandle? handle = null;
        var reserve = _options.Allocation == SwapAllocation.Reserve;
        string? failure = null;
        try
        {
            handle = _directory.CreateAnonymousFile();
            if (reserve)
            {
                var errno = LinuxFile.Allocate(handle, 0, 0, size);
                if (errno != 0)
                {
                    failure = errno is LinuxFile.ENOSPC or LinuxFile.EDQUOT
                        ? $"disk full: cannot reserve {size} B in {_directory.Path}"
                        : $"cannot reserve {size} B in {_directory.Path}: errno {errno}";
                }
            }
            else
            {
                RandomAccess.SetLength(handle, size);
            }
            if (failure is null && _options.Format)
            {
                var page = new byte[SwapHeader.PageSize];
                SwapHeader.Write(page, size, Guid.NewGuid(), "netswap");
                var errno = LinuxFile.WriteExactly(handle, page, 0);
                if (errno != 0)
                {
                    failure = $"cannot write the swap header: errno {errno}";
                }
            }
        }
        catch (IOException e)
        {
            failure = e.Message;
        }
        SwapArea? area = null;
        long committed;
        lock (_lock)
        {
            if (reserve)
            {
                _pendingAllocation -= size;
            }
            ForgetToken(name.Token);
            if (failure is not null || _disposed)
            {
                _committed -= size;
            }
            else
            {
                area = new SwapArea(id, export, name.Token, client.Address is { } address ? Access.AddressRuleSet.Normalize(address) : null, client.RemoteAddress, size, handle!, reserve ? size : 0);
                area.Attach(abortOwner);
                _areas.Add(id, area);
                if (name.Token is { } token)
                {
                    _byToken[token] = area;
                }
            }
            committed = _committed;
        }
        if (area is null)
        {
            handle?.Dispose();
            return Refused(export, client, NbdOptionReplyType.ErrPolicy, failure ?? "server shutting down");
        }
        SwapLog.Created(_logger, id, client.RemoteAddress, export, size, area.Reserved, committed);
        return (area, 0, null);
    }

    private void ForgetToken(string? token)
    {
        if (token is not null)
        {
            _tokensBeingCreated.Remove(token);
        }
    }

    private (SwapArea?, NbdOptionReplyType, string?) Refused(string export, ConnectionInfo client, NbdOptionReplyType error, string reason)
    {
        SwapLog.Refused(_logger, client.RemoteAddress, export, reason);
        return (null, error, reason);
    }

    /// <summary>
    /// The connection let go of its area. A clean disconnect (NBD_CMD_DISC) or an area without a token is destroyed
    /// at once; otherwise the area waits out the grace period for its client to reconnect.
    /// </summary>
    public void Release(SwapArea area, bool clean)
    {
        var destroy = false;
        long committed = 0;
        lock (_lock)
        {
            if (area.State != SwapAreaState.Attached)
            {
                return;
            }
            if (clean || area.Token is null || _options.Grace <= TimeSpan.Zero || _disposed)
            {
                destroy = true;
                committed = DestroyLocked(area);
            }
            else
            {
                area.BeginGrace(_options.Grace, Expire);
            }
        }
        area.Released.TrySetResult();
        if (destroy)
        {
            Destroyed(area, clean ? "client disconnected" : area.Token is null ? "connection lost; no token, no grace" : "connection lost", committed);
        }
        else
        {
            SwapLog.GraceStarted(_logger, area.Id, area.Client, area.Export, _options.Grace);
        }
    }

    /// <summary>
    /// A fault seam for tests: called by the grace timer under the lock, after it has found the area in grace and before
    /// it destroys it, so a test can try a reattach exactly there (it must wait for the lock; null in production).
    /// </summary>
    internal Action<SwapArea>? ExpiryChecked { get; set; }

    /// <summary>
    /// The grace timer fired. The check that the area is still in grace and its destruction are one step under the
    /// lock: a reattach that got in first keeps its area, one that comes after finds the token free (as two steps, a
    /// reattach between them could lose its area under a live client).
    /// </summary>
    private void Expire(SwapArea area)
    {
        long committed;
        lock (_lock)
        {
            if (area.State != SwapAreaState.Grace)
            {
                return;
            }
            ExpiryChecked?.Invoke(area);
            committed = DestroyLocked(area);
        }
        Destroyed(area, "grace period over", committed);
    }

    private void Destroy(SwapArea area, string reason)
    {
        long committed;
        lock (_lock)
        {
            if (area.State == SwapAreaState.Destroyed)
            {
                return;
            }
            committed = DestroyLocked(area);
        }
        Destroyed(area, reason, committed);
    }

    /// <summary>The one transition to Destroyed: out of every index, its size out of the budget. Returns the budget left.</summary>
    private long DestroyLocked(SwapArea area)
    {
        area.MarkDestroyed();
        _areas.Remove(area.Id);
        if (area.Token is { } token && _byToken.TryGetValue(token, out var current) && current == area)
        {
            _byToken.Remove(token);
        }
        _committed -= area.Size;
        return _committed;
    }

    /// <summary>After <see cref="DestroyLocked"/>, outside the lock: the storage goes back, waiters and the log learn of it.</summary>
    private void Destroyed(SwapArea area, string reason, long committed)
    {
        // Closing the last descriptor of a nameless file gives its blocks back to the file system.
        area.Handle.Dispose();
        area.Released.TrySetResult();
        SwapLog.Destroyed(_logger, area.Id, area.Client, area.Export, reason, area.Size, committed);
    }

    public void Dispose()
    {
        List<SwapArea> all;
        lock (_lock)
        {
            _disposed = true;
            all = [.. _areas.Values];
        }
        foreach (var area in all)
        {
            Destroy(area, "server stopped");
        }
    }
}
