using System.Buffers;

namespace NetSwap.Server.Transmission;

/// <summary>
/// Where payload buffers come from. Those of 128 KiB and more live on the large-object heap, which only a full
/// collection frees; the shared ArrayPool keeps a few dozen of each size and drops the rest, so a few hundred large
/// writes in flight at once (200 swap clients writing into fresh pages, each write waiting on the thread pool) left
/// behind garbage that held the server's memory at three to five times what was in use (bench/swapscale.sh). Here
/// every large buffer given back is kept for the next request, so the server holds no more of them than were ever out
/// at once, which the payload-memory allowance bounds (every buffer is rented under it). Kept buffers beyond what the
/// last few seconds needed are let go (<see cref="TrimToRecentNeed"/>): a swap client's first writes all land in fresh
/// pages and wait on the thread pool, each holding a buffer, while its later ones overwrite and run on the event loop
/// one at a time, so the buffers of that first fill would otherwise stay for good.
/// </summary>
internal static class PayloadBuffers
{
    /// <summary>The sizes kept here: 128 KiB and 256 KiB (the largest payload buffer, one chunk).</summary>
    private const int Smallest = 128 * 1024;
    private const int Largest = 256 * 1024;

    private static readonly Lock s_gate = new();
    private static readonly Stack<byte[]>[] s_free = [new(), new()];
    private static long s_created;
    private static int s_out;
    private static int s_windowPeak;
    private static int s_looks;

    /// <summary>Large buffers made so far (the rest were reused).</summary>
    public static long LargeCreated => Interlocked.Read(ref s_created);

    /// <summary>Large buffers kept for reuse now.</summary>
    public static int LargeKept
    {
        get
        {
            lock (s_gate)
            {
                return s_free[0].Count + s_free[1].Count;
            }
        }
    }

    /// <summary>A buffer of exactly <paramref name="size"/> bytes when it is a power of two of 128 KiB or more.</summary>
    public static byte[] Rent(int size)
    {
        var index = Index(size);
        if (index < 0)
        {
            return ArrayPool<byte>.Shared.Rent(size);
        }
        lock (s_gate)
        {
            s_out++;
            s_windowPeak = Math.Max(s_windowPeak, s_out);
            if (s_free[index].TryPop(out var kept))
            {
                return kept;
            }
        }
        Interlocked.Increment(ref s_created);
        // Zeroed, never uninitialised: reused heap memory may hold another client's data.
        return new byte[size];
    }

    /// <summary>Gives a buffer back, cleared first: it held a client's data and the next user may be anyone.</summary>
    public static void ClearAndReturn(byte[] buffer)
    {
        var index = Index(buffer.Length);
        if (index < 0)
        {
            ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
            return;
        }
        Array.Clear(buffer);
        lock (s_gate)
        {
            s_out--;
            s_free[index].Push(buffer);
        }
    }

    /// <summary>
    /// Called at every progress check: every <paramref name="looks"/> checks, the kept buffers beyond the most that were
    /// out at once since the last such look are let go, if that is at least <paramref name="slack"/> of them; returns
    /// how many it let go (a collection then gives their memory back).
    /// </summary>
    public static int TrimToRecentNeed(int looks, int slack)
    {
        lock (s_gate)
        {
            if (++s_looks < looks)
            {
                return 0;
            }
            s_looks = 0;
            var keep = Math.Max(0, s_windowPeak - s_out);
            s_windowPeak = s_out;
            var kept = s_free[0].Count + s_free[1].Count;
            if (kept - keep < slack)
            {
                return 0;
            }
            for (var i = keep; i < kept; i++)
            {
                (s_free[1].Count > 0 ? s_free[1] : s_free[0]).Pop();
            }
            return kept - keep;
        }
    }

    /// <summary>Lets the kept buffers go (after a burst: the next full collection gives their memory back); the window
    /// of <see cref="TrimToRecentNeed"/> starts again.</summary>
    public static void Trim()
    {
        lock (s_gate)
        {
            s_free[0].Clear();
            s_free[1].Clear();
            s_looks = 0;
            s_windowPeak = s_out;
        }
    }

    private static int Index(int size) => size switch
    {
        Smallest => 0,
        Largest => 1,
        _ => -1,
    };
}
