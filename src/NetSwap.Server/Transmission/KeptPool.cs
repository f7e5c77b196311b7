namespace NetSwap.Server.Transmission;

/// <summary>
/// Things of a few sizes kept for reuse: every one given back is kept for the next taker, so no more exist than were
/// ever out at once; those kept beyond what the last window of checks needed are let go by
/// <see cref="TrimToRecentNeed"/> (a burst's leftovers), and all of them by <see cref="Trim"/>. Thread-safe.
/// </summary>
internal sealed class KeptPool<T>(int[] sizes, Action<T> drop) where T : class
{
    private readonly Lock _gate = new();
    private readonly Stack<T>[] _free = [.. sizes.Select(_ => new Stack<T>())];
    private int _out;
    private int _windowPeak;
    private int _looks;

    /// <summary>How many are kept for reuse now.</summary>
    public int Kept
    {
        get
        {
            lock (_gate)
            {
                return _free.Sum(f => f.Count);
            }
        }
    }

    /// <summary>The size class of <paramref name="size"/>, or -1 when it is not one of the pool's sizes.</summary>
    public int IndexOf(int size) => Array.IndexOf(sizes, size);

    /// <summary>Counts one out and returns a kept one of the size class, or null: then the caller makes one, and calls
    /// <see cref="Unrent"/> if it cannot.</summary>
    public T? Take(int index)
    {
        lock (_gate)
        {
            _out++;
            _windowPeak = Math.Max(_windowPeak, _out);
            return _free[index].TryPop(out var kept) ? kept : null;
        }
    }

    /// <summary>A <see cref="Take"/> that ended with nothing out after all.</summary>
    public void Unrent()
    {
        lock (_gate)
        {
            _out--;
        }
    }

    /// <summary>Keeps <paramref name="item"/> (of size class <paramref name="index"/>) for the next taker.</summary>
    public void Return(int index, T item)
    {
        lock (_gate)
        {
            _out--;
            _free[index].Push(item);
        }
    }

    /// <summary>
    /// Every <paramref name="looks"/> calls, lets go of the kept ones beyond the most that were out at once since the last
    /// such look, if that is at least <paramref name="slack"/> of them, the largest first; returns how many went.
    /// </summary>
    public int TrimToRecentNeed(int looks, int slack)
    {
        List<T> dropped;
        lock (_gate)
        {
            if (++_looks < looks)
            {
                return 0;
            }
            _looks = 0;
            var keep = Math.Max(0, _windowPeak - _out);
            _windowPeak = _out;
            var kept = _free.Sum(f => f.Count);
            if (kept - keep < slack)
            {
                return 0;
            }
            dropped = new(kept - keep);
            for (var i = keep; i < kept; i++)
            {
                dropped.Add(Array.FindLast(_free, f => f.Count > 0)!.Pop());
            }
        }
        dropped.ForEach(drop);
        return dropped.Count;
    }

    /// <summary>Lets every kept one go; the window of <see cref="TrimToRecentNeed"/> starts again.</summary>
    public void Trim()
    {
        List<T> dropped = [];
        lock (_gate)
        {
            foreach (var free in _free)
            {
                dropped.AddRange(free);
                free.Clear();
            }
            _looks = 0;
            _windowPeak = _out;
        }
        dropped.ForEach(drop);
    }
}
