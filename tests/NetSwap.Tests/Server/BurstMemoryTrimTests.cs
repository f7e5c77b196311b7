using NetSwap.Server.Hosting;

namespace NetSwap.Tests.Server;

/// <summary>When the daemon gives a burst's memory back: after the burst, never under a steady load.</summary>
public class BurstMemoryTrimTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public void ASteadyLoad_NeverTrims_HoweverTheHeapGrows()
    {
        var trim = new BurstMemoryTrim(16 * MiB);
        var heap = GC.GetTotalMemory(false);
        for (var tick = 0; tick < 100; tick++)
        {
            Assert.False(trim.ShouldTrim(10, heap + (tick * MiB)));
        }
        // One of ten leaving is no burst ending.
        Assert.False(trim.ShouldTrim(9, heap + (200 * MiB)));
    }

    [Fact]
    public void TheEndOfABurst_TrimsOnce_OnlyWhenTheHeapGrew()
    {
        var trim = new BurstMemoryTrim(16 * MiB);
        var heap = GC.GetTotalMemory(false);
        Assert.False(trim.ShouldTrim(1000, heap + (100 * MiB)));
        // Down to half: due, as the heap grew.
        Assert.True(trim.ShouldTrim(500, heap + (100 * MiB)));
        trim.Trimmed(500, heap + (20 * MiB));
        // Measured from the trim: the rest of the burst leaving trims again only after new growth.
        Assert.False(trim.ShouldTrim(0, heap + (30 * MiB)));
        Assert.True(trim.ShouldTrim(0, heap + (40 * MiB)));
        trim.Trimmed(0, heap);
        // Idle, no growth: nothing.
        Assert.False(trim.ShouldTrim(0, heap + MiB));
    }

    [Fact]
    public void ABurstWithoutGrowth_DoesNotTrim()
    {
        var trim = new BurstMemoryTrim(16 * MiB);
        var heap = GC.GetTotalMemory(false);
        Assert.False(trim.ShouldTrim(64, heap));
        Assert.False(trim.ShouldTrim(0, heap + MiB));
    }
}
