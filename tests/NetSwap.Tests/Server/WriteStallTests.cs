using NetSwap.Fuzz;
using NetSwap.Protocol.Nbd;
using NetSwap.Server.Transmission;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Server;

/// <summary>
/// Small writes to a disk-backed file run on the event loop while they only copy into the page cache; when the kernel
/// throttles writers (dirty pages outrunning the disk), they must move off it, or every client of that loop waits
/// through each pause.
/// </summary>
[Collection(nameof(TimingCollection))]
public class WriteStallTests
{
    [Fact]
    public async Task ThrottledDiskWrites_LeaveTheEventLoop_AfterTheFirst_AndComeBackWhenFastAgain()
    {
        var slow = false;
        var onLoop = new List<bool>();
        void OnWrite()
        {
            lock (onLoop)
            {
                // Event loop threads are named netswap-io-N.
                onLoop.Add(Thread.CurrentThread.Name?.StartsWith("netswap-io-", StringComparison.Ordinal) == true);
            }
            if (Volatile.Read(ref slow))
            {
                Thread.Sleep(30);   // as balance_dirty_pages would pause the writer
            }
        }
        using var catalog = new MemoryExportCatalog(1 << 20, 1 << 20, 1 << 20, writesMayWait: true, onWrite: OnWrite);
        await using var server = ServerHarness.Start(catalog);
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        await client.GoAsync("faulty");
        var block = new byte[4096];

        // Fast writes to the "disk" run on the loop (that this test runs on an event loop at all). Most, not all: a
        // test host busy with other tests can hold a quick write up past 2 ms, and then the next ones go to the pool.
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Write, (ulong)i * 4096, 4096, payload: block)).Error);
        }
        Assert.True(onLoop.Count(l => l) >= 3, $"{onLoop.Count(l => l)} of 5 fast writes ran on the event loop");

        // Throttled: the first slow write is found out on the loop, the rest run on the thread pool.
        Volatile.Write(ref slow, true);
        onLoop.Clear();
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Write, (ulong)i * 4096, 4096, payload: block)).Error);
        }
        Assert.Equal(10, onLoop.Count);
        Assert.True(onLoop.Count(l => l) <= 1, $"{onLoop.Count(l => l)} of 10 slow writes ran on the event loop");

        // Fast again: once a window has passed without a slow write, writes are back on the loop.
        Volatile.Write(ref slow, false);
        await client.RequestAsync(NbdCommand.Write, 0, 4096, payload: block);
        await Task.Delay(WriteStalls.Window + TimeSpan.FromMilliseconds(200));
        onLoop.Clear();
        for (var i = 0; i < 5; i++)
        {
            await client.RequestAsync(NbdCommand.Write, (ulong)i * 4096, 4096, payload: block);
        }
        Assert.True(onLoop.Count(l => l) >= 3, $"{onLoop.Count(l => l)} of 5 writes ran on the event loop once fast again");
    }

    [Fact]
    public async Task LargeWritesThatAllocate_LeaveTheEventLoop_AndOverwritesStayOnIt()
    {
        var onLoop = new List<bool>();
        void OnWrite()
        {
            lock (onLoop)
            {
                onLoop.Add(Thread.CurrentThread.Name?.StartsWith("netswap-io-", StringComparison.Ordinal) == true);
            }
        }
        // In memory, as a swap area on tmpfs: nothing waits for a disk, but a first write into fresh pages allocates.
        using var catalog = new MemoryExportCatalog(4 << 20, 4 << 20, 4 << 20, writesMayWait: false, onWrite: OnWrite, sparse: true);
        await using var server = ServerHarness.Start(catalog);
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        await client.GoAsync("faulty");
        var block = new byte[128 * 1024];

        // Every first write into a 128 KiB piece goes to the thread pool, never onto an event loop thread.
        for (var i = 0; i < 8; i++)
        {
            Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Write, (ulong)i * 128 * 1024, 128 * 1024, payload: block)).Error);
        }
        Assert.Equal(8, onLoop.Count);
        Assert.True(onLoop.All(l => !l), $"{onLoop.Count(l => l)} of 8 allocating writes ran on the event loop");

        // Writing the same pieces again allocates nothing: they run on the loop (most: the first request after the
        // handshake may still be on the thread that ran it).
        onLoop.Clear();
        for (var i = 0; i < 8; i++)
        {
            Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Write, (ulong)i * 128 * 1024, 128 * 1024, payload: block)).Error);
        }
        Assert.True(onLoop.Count(l => l) >= 6, $"{onLoop.Count(l => l)} of 8 overwrites ran on the event loop");
    }
}
