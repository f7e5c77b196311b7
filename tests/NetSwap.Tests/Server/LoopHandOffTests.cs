using NetSwap.Protocol.Nbd;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Server;

/// <summary>
/// The lost wake-up of issue 14, item 1, forced: the reply writer is held by a request that runs on the thread pool
/// while the receive loop works through a full turn of requests, so the loop's wait for the writer ends on a thread-pool
/// thread and its hand-back to the event loop (Yield) comes from there. The event loop must be woken for it; before the
/// fix it slept in epoll_wait with the continuation in its unsynchronised ready list and the requests still in the socket
/// were never read. Runs alone: another test's connection on the same event loop would wake the loop and hide the bug.
/// </summary>
[Collection(nameof(TimingCollection))]
public class LoopHandOffTests
{
    [Fact]
    public void LoopAffinityChecks_AreOnInTheTests()
    {
        // The test project's runtimeconfig turns them on; without it every assertion of loop ownership is silent.
        Assert.True(NetSwap.Server.Transport.EventLoop.CheckAffinity);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ReceiveLoopResumedOffTheLoop_IsHandedBackAndEveryRequestAnswered(bool structured)
    {
        using var gate = new SemaphoreSlim(0);
        var holds = 0;
        var armed = false;
        await using var server = await ServerHarness.StartAsync(options => options.ReplyWriterHeld = async () =>
        {
            // Only the first reply (the FLUSH's, on the thread pool) holds the writer, until the test lets it go.
            if (Volatile.Read(ref armed) && Interlocked.Increment(ref holds) == 1)
            {
                await gate.WaitAsync(TimeSpan.FromSeconds(30));
            }
        }, ("disk", 8L << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        await client.GoAsync("disk", structured);
        // The pages are in memory, so the READs below run inline on the event loop.
        Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Write, 0, 4096, payload: new byte[4096])).Error);
        Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Read, 0, 4096)).Error);
        Volatile.Write(ref armed, true);

        var flush = await client.SendRequestAsync(NbdCommand.Flush, 0, 0);
        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref holds) == 1, TimeSpan.FromSeconds(10)), "the FLUSH never replied");
        // Over three turns of requests (32 each) in one write: the receive loop never waits for the socket meanwhile.
        const int reads = 100;
        var burst = new byte[reads * NbdRequest.Size];
        for (var i = 0; i < reads; i++)
        {
            new NbdRequest(0, NbdCommand.Read, 1000UL + (ulong)i, 0, 4096).Write(burst.AsSpan(i * NbdRequest.Size));
            client.ExpectRead(1000UL + (ulong)i, 4096, 0);
        }
        await client.WriteAsync(burst);
        // Let the loop reach its turn's end and wait for the writer, then let the writer go from this (foreign) thread.
        await Task.Delay(300);
        gate.Release();
        var answered = new HashSet<ulong>();
        client.ReadDeadline = TimeSpan.FromSeconds(10);
        for (var i = 0; i < reads + 1; i++)
        {
            var reply = await client.ReadReplyAsync();
            Assert.Equal(NbdError.None, reply.Error);
            answered.Add(reply.Cookie);
        }
        Assert.Contains(flush, answered);
        Assert.Equal(reads + 1, answered.Count);
    }
}
