using NetSwap.Server.Transport;

namespace NetSwap.Server.Transmission;

/// <summary>
/// Where payload pipes come from (see <see cref="PayloadPipe"/>): kept for reuse as payload buffers are, trimmed to the
/// recent need with them. At most <see cref="MaxPipes"/> exist (two descriptors each: a server near its open-files
/// limit must still take connections); when none can be had, or the kernel refused one in the last second (an
/// unprivileged daemon past pipe-user-pages-soft), the caller uses a buffer instead.
/// </summary>
internal static class PayloadPipes
{
    /// <summary>The capacities kept: the reserved sizes of WRITE payloads that go through a pipe.</summary>
    public const int Smallest = 64 * 1024;
    public const int Largest = 256 * 1024;
    public const int MaxPipes = 1024;

    private static readonly KeptPool<PayloadPipe> s_kept = new([Smallest, 128 * 1024, Largest], Drop);
    private static int s_existing;
    private static long s_refusedUntil;
    private static long s_filledEarly;

    /// <summary>Payloads whose pipe filled before their end, so that they were finished in a buffer.</summary>
    public static long FilledEarly => Interlocked.Read(ref s_filledEarly);

    /// <summary>Called when a payload's pipe filled before its end (<see cref="FilledEarly"/>).</summary>
    public static void NoteFilledEarly() => Interlocked.Increment(ref s_filledEarly);

    /// <summary>Pipes open now, kept or in use.</summary>
    public static int Existing => Volatile.Read(ref s_existing);

    /// <summary>Pipes kept for reuse now.</summary>
    public static int Kept => s_kept.Kept;

    /// <summary>An empty pipe of <paramref name="capacity"/> bytes (one of the kept sizes), or null: use a buffer.</summary>
    public static PayloadPipe? TryRent(int capacity)
    {
        var index = s_kept.IndexOf(capacity);
        if (index < 0 || Environment.TickCount64 < Volatile.Read(ref s_refusedUntil))
        {
            return null;
        }
        if (s_kept.Take(index) is { } kept)
        {
            return kept;
        }
        if (Interlocked.Increment(ref s_existing) <= MaxPipes && PayloadPipe.TryCreate(capacity, out _) is { } made)
        {
            return made;
        }
        Interlocked.Decrement(ref s_existing);
        Volatile.Write(ref s_refusedUntil, Environment.TickCount64 + 1000);
        s_kept.Unrent();
        return null;
    }

    /// <summary>Gives a pipe back: kept when it is empty, closed when anything is left in it (a failed write).</summary>
    public static void Return(PayloadPipe pipe)
    {
        if (pipe.Held == 0)
        {
            s_kept.Return(s_kept.IndexOf(pipe.Capacity), pipe);
            return;
        }
        s_kept.Unrent();
        Drop(pipe);
    }

    /// <summary>See <see cref="KeptPool{T}.TrimToRecentNeed"/>.</summary>
    public static int TrimToRecentNeed(int looks, int slack) => s_kept.TrimToRecentNeed(looks, slack);

    /// <summary>Closes every kept pipe.</summary>
    public static void Trim() => s_kept.Trim();

    private static void Drop(PayloadPipe pipe)
    {
        pipe.Dispose();
        Interlocked.Decrement(ref s_existing);
    }
}
