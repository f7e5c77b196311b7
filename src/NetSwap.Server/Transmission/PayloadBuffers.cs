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
    private static readonly KeptPool<byte[]> s_kept = new([128 * 1024, 256 * 1024], _ => { });
    private static long s_created;

    /// <summary>Large buffers made so far (the rest were reused).</summary>
    public static long LargeCreated => Interlocked.Read(ref s_created);

    /// <summary>Large buffers kept for reuse now.</summary>
    public static int LargeKept => s_kept.Kept;

    /// <summary>A buffer of exactly <paramref name="size"/> bytes when it is a power of two of 128 KiB or more.</summary>
    public static byte[] Rent(int size)
    {
        var index = s_kept.IndexOf(size);
        if (index < 0)
        {
            return ArrayPool<byte>.Shared.Rent(size);
        }
        if (s_kept.Take(index) is { } kept)
        {
            return kept;
        }
        Interlocked.Increment(ref s_created);
        // Zeroed, never uninitialised: reused heap memory may hold another client's data.
        return new byte[size];
    }

    /// <summary>Gives a buffer back, cleared first: it held a client's data and the next user may be anyone.</summary>
    public static void ClearAndReturn(byte[] buffer)
    {
        var index = s_kept.IndexOf(buffer.Length);
        if (index < 0)
        {
            ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
            return;
        }
        Array.Clear(buffer);
        s_kept.Return(index, buffer);
    }

    /// <summary>
    /// Called at every progress check: every <paramref name="looks"/> checks, the kept buffers beyond the most that were
    /// out at once since the last such look are let go, if that is at least <paramref name="slack"/> of them; returns
    /// how many it let go (a collection then gives their memory back).
    /// </summary>
    public static int TrimToRecentNeed(int looks, int slack) => s_kept.TrimToRecentNeed(looks, slack);

    /// <summary>Lets the kept buffers go (after a burst: the next full collection gives their memory back); the window
    /// of <see cref="TrimToRecentNeed"/> starts again.</summary>
    public static void Trim() => s_kept.Trim();
}
