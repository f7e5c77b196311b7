using System.Diagnostics;

namespace NetSwap.Server.Access;

/// <summary>
/// A token bucket: <see cref="Rate"/> tokens a second, at most <see cref="Burst"/> saved up. <see cref="TryTake"/>
/// answers at once (connection rates); <see cref="WaitAsync"/> may go into debt and then waits it off (bandwidth),
/// so a large request is delayed, never refused, and the long-run rate is exact.
/// </summary>
internal sealed class TokenBucket
{
    private readonly Lock _lock = new();
    private double _tokens;
    private long _lastTimestamp;

    public TokenBucket(double rate, double burst)
    {
        Rate = rate;
        Burst = burst;
        _tokens = burst;
        _lastTimestamp = Stopwatch.GetTimestamp();
    }

    public double Rate { get; private set; }
    public double Burst { get; private set; }

    public void Update(double rate, double burst)
    {
        lock (_lock)
        {
            Refill();
            Rate = rate;
            Burst = burst;
            _tokens = Math.Min(_tokens, burst);
        }
    }

    private void Refill()
    {
        var now = Stopwatch.GetTimestamp();
        _tokens = Math.Min(Burst, _tokens + (Stopwatch.GetElapsedTime(_lastTimestamp, now).TotalSeconds * Rate));
        _lastTimestamp = now;
    }

    /// <summary>True when the bucket is full again: an idle entry that can be forgotten.</summary>
    public bool IsFull
    {
        get
        {
            lock (_lock)
            {
                Refill();
                return _tokens >= Burst;
            }
        }
    }

    public bool TryTake(double tokens = 1)
    {
        lock (_lock)
        {
            Refill();
            if (_tokens < tokens)
            {
                return false;
            }
            _tokens -= tokens;
            return true;
        }
    }

    public ValueTask WaitAsync(long tokens, CancellationToken cancellationToken)
    {
        TimeSpan delay;
        lock (_lock)
        {
            if (Rate <= 0)
            {
                return ValueTask.CompletedTask;
            }
            Refill();
            _tokens -= tokens;
            if (_tokens >= 0)
            {
                return ValueTask.CompletedTask;
            }
            delay = TimeSpan.FromSeconds(-_tokens / Rate);
        }
        return new ValueTask(Task.Delay(delay, cancellationToken));
    }
}
