using System.Diagnostics;

namespace NetSwap.Server.Transmission;

/// <summary>
/// Whether buffered writes to disk-backed files have lately been slow. Such a write normally only copies into the page
/// cache, which is why a small one runs on an event loop; but once dirty pages outrun the disk the kernel throttles the
/// writer (balance_dirty_pages sleeps it, up to 200 ms at a time), and on an event loop every other client of that loop
/// would sit through each pause. One slow write is enough: for a second after the last slow one, those writes run on
/// the thread pool; then they are tried on the loop again. One per server (the kernel's throttling is not per client).
/// </summary>
internal sealed class WriteStalls
{
    /// <summary>A page-cache copy of 64 KiB takes microseconds; this long means the kernel made the writer wait.</summary>
    public static readonly TimeSpan SlowWrite = TimeSpan.FromMilliseconds(2);
    /// <summary>How long after the last slow write writes stay off the event loops.</summary>
    public static readonly TimeSpan Window = TimeSpan.FromSeconds(1);

    private static readonly long SlowTicks = (long)(SlowWrite.TotalSeconds * Stopwatch.Frequency);
    private static readonly long WindowTicks = (long)(Window.TotalSeconds * Stopwatch.Frequency);
    private long _until;

    /// <summary>A write was slow within the last <see cref="Window"/>.</summary>
    public bool Recent => Stopwatch.GetTimestamp() < Volatile.Read(ref _until);

    /// <summary>Notes a write that began at <paramref name="started"/> (a Stopwatch timestamp) and has just ended.</summary>
    public void Note(long started)
    {
        var now = Stopwatch.GetTimestamp();
        if (now - started > SlowTicks)
        {
            Volatile.Write(ref _until, now + WindowTicks);
        }
    }
}
