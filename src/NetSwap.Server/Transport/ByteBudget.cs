namespace NetSwap.Server.Transport;

/// <summary>
/// An asynchronous, first-come-first-served allowance of bytes: how much payload buffer one connection may hold.
/// A request takes its whole share at once or waits, so two large requests can never each hold half and deadlock.
/// </summary>
internal sealed class ByteBudget
{
    private readonly Lock _lock = new();
    private readonly Queue<(int Bytes, TaskCompletionSource Waiter)> _waiters = new();
    private readonly int _capacity;
    private int _available;
    private int _peakInUse;

    public ByteBudget(int capacity)
    {
        _capacity = capacity;
        _available = capacity;
    }

    public int Capacity => _capacity;
    /// <summary>The most ever held at once: what tests and the status view check the bound against.</summary>
    public int PeakInUse => Volatile.Read(ref _peakInUse);

    public int Available
    {
        get
        {
            lock (_lock)
            {
                return _available;
            }
        }
    }

    public ValueTask AcquireAsync(int bytes, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bytes, _capacity);
        TaskCompletionSource waiter;
        lock (_lock)
        {
            if (_waiters.Count == 0 && _available >= bytes)
            {
                _available -= bytes;
                NotePeak();
                return ValueTask.CompletedTask;
            }
            waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Enqueue((bytes, waiter));
        }
        return cancellationToken.CanBeCanceled ? new ValueTask(WaitAsync(waiter, bytes, cancellationToken)) : new ValueTask(waiter.Task);
    }

    private async Task WaitAsync(TaskCompletionSource waiter, int bytes, CancellationToken cancellationToken)
    {
        try
        {
            await waiter.Task.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            // Granted at the same moment as cancelled: give the grant back.
            if (!waiter.TrySetCanceled(cancellationToken))
            {
                Release(bytes);
            }
            throw;
        }
    }

    public void Release(int bytes)
    {
        List<(int Bytes, TaskCompletionSource Waiter)>? granted = null;
        lock (_lock)
        {
            _available += bytes;
            while (_waiters.Count > 0)
            {
                var (need, waiter) = _waiters.Peek();
                if (waiter.Task.IsCompleted)
                {
                    _waiters.Dequeue();
                    continue;
                }
                if (need > _available)
                {
                    break;
                }
                _waiters.Dequeue();
                _available -= need;
                NotePeak();
                (granted ??= []).Add((need, waiter));
            }
        }
        if (granted is not null)
        {
            foreach (var (grantedBytes, waiter) in granted)
            {
                // Cancelled while being granted: the cancelled side did not take the bytes, so return them.
                if (!waiter.TrySetResult())
                {
                    Release(grantedBytes);
                }
            }
        }
    }

    private void NotePeak() => _peakInUse = Math.Max(_peakInUse, _capacity - _available);
}
