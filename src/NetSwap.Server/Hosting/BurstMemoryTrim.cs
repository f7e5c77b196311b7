using System.Runtime;

namespace NetSwap.Server.Hosting;

/// <summary>
/// Gives the memory of a burst of connections back to the system once the burst is over. A thousand clients that
/// stalled mid-payload and were cut leave their buffers as garbage and the heap grown; with nothing allocating
/// afterwards no collection comes, and the daemon would keep that memory resident for good. So when the
/// connection count has fallen to half its peak or less (a steady load never does) and the heap has grown by
/// <see cref="Growth"/> since the last trim, one full compacting collection runs. Not thread-safe: the caller
/// serialises <see cref="ShouldTrim"/> and <see cref="Trimmed"/>.
/// </summary>
internal sealed class BurstMemoryTrim(long growth)
{
    private int _peak;
    private long _heapAfterTrim = GC.GetTotalMemory(false);

    public long Growth { get; } = growth;

    /// <summary>Told the connection count and heap size now: whether a trim is due.</summary>
    public bool ShouldTrim(int connections, long heapBytes)
    {
        _peak = Math.Max(_peak, connections);
        return _peak > 0 && connections <= _peak / 2 && heapBytes - _heapAfterTrim >= Growth;
    }

    /// <summary>Called after a trim: the burst so far is over; the next is measured from here.</summary>
    public void Trimmed(int connections, long heapBytes)
    {
        _peak = connections;
        _heapAfterTrim = heapBytes;
    }

    /// <summary>One blocking, compacting collection of every generation, the large-object heap included.</summary>
    public static void Collect()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }
}
