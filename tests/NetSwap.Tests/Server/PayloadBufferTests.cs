using NetSwap.Fuzz;
using NetSwap.Protocol.Nbd;
using NetSwap.Server.Transmission;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Server;

/// <summary>
/// Large payload buffers (128 KiB and up) are kept and reused rather than left to the large-object heap: a burst of
/// large writes must leave the server holding no more of them than were ever out at once. In the timing collection:
/// the counters are the process's, and no other test may rent meanwhile.
/// </summary>
[Collection(nameof(TimingCollection))]
public class PayloadBufferTests
{
    [Fact]
    public void LargeBuffersGivenBack_AreTheOnesRentedNext_Cleared_AndNoneIsMade()
    {
        PayloadBuffers.Trim();
        var first = Enumerable.Range(0, 300).Select(i => PayloadBuffers.Rent(i % 10 == 0 ? 256 * 1024 : 128 * 1024)).ToList();
        foreach (var buffer in first)
        {
            buffer.AsSpan().Fill(0xA5);   // a client's data
            PayloadBuffers.ClearAndReturn(buffer);
        }
        Assert.Equal(300, PayloadBuffers.LargeKept);
        var made = PayloadBuffers.LargeCreated;
        var second = Enumerable.Range(0, 300).Select(i => PayloadBuffers.Rent(i % 10 == 0 ? 256 * 1024 : 128 * 1024)).ToList();
        Assert.Equal(made, PayloadBuffers.LargeCreated);
        var seen = new HashSet<byte[]>(first, ReferenceEqualityComparer.Instance);
        Assert.All(second, b => Assert.Contains(b, seen));
        Assert.All(second, b => Assert.True(b.AsSpan().IndexOfAnyExcept((byte)0) < 0, "a reused buffer still holds data"));
        Assert.Equal(30, second.Count(b => b.Length == 256 * 1024));
        foreach (var buffer in second)
        {
            PayloadBuffers.ClearAndReturn(buffer);
        }
        PayloadBuffers.Trim();
        Assert.Equal(0, PayloadBuffers.LargeKept);
    }

    [Fact]
    public void KeptBuffers_BeyondWhatTheLastWindowNeeded_AreLetGo()
    {
        PayloadBuffers.Trim();   // a window starts here
        // A burst: 100 out at once, then all given back.
        var burst = Enumerable.Range(0, 100).Select(_ => PayloadBuffers.Rent(128 * 1024)).ToList();
        burst.ForEach(PayloadBuffers.ClearAndReturn);
        Assert.Equal(0, PayloadBuffers.TrimToRecentNeed(3, 4));
        Assert.Equal(0, PayloadBuffers.TrimToRecentNeed(3, 4));
        Assert.Equal(0, PayloadBuffers.TrimToRecentNeed(3, 4));   // the window of the burst: all 100 were needed
        Assert.Equal(100, PayloadBuffers.LargeKept);
        // Then a steady load that never has more than 10 out.
        var steady = Enumerable.Range(0, 10).Select(_ => PayloadBuffers.Rent(128 * 1024)).ToList();
        steady.ForEach(PayloadBuffers.ClearAndReturn);
        Assert.Equal(0, PayloadBuffers.TrimToRecentNeed(3, 4));
        Assert.Equal(0, PayloadBuffers.TrimToRecentNeed(3, 4));
        Assert.Equal(90, PayloadBuffers.TrimToRecentNeed(3, 4));
        Assert.Equal(10, PayloadBuffers.LargeKept);
        // Fewer than the slack beyond the need: kept.
        var few = Enumerable.Range(0, 8).Select(_ => PayloadBuffers.Rent(128 * 1024)).ToList();
        few.ForEach(PayloadBuffers.ClearAndReturn);
        for (var look = 0; look < 3; look++)
        {
            Assert.Equal(0, PayloadBuffers.TrimToRecentNeed(3, 4));
        }
        Assert.Equal(10, PayloadBuffers.LargeKept);
        PayloadBuffers.Trim();
    }

    [Fact]
    public void TheFullCollection_AfterATrimToTheRecentNeed_KeepsWhatThatNeedIs()
    {
        // The trim to the recent need is followed by the burst trim's collection: that collection must not let the
        // buffers go that the trim kept on purpose (it once did, emptying the pool at every trim).
        PayloadBuffers.Trim();
        var needed = Enumerable.Range(0, 20).Select(_ => PayloadBuffers.Rent(128 * 1024)).ToList();
        needed.ForEach(PayloadBuffers.ClearAndReturn);
        NetSwap.Server.Hosting.BurstMemoryTrim.Collect();
        Assert.Equal(20, PayloadBuffers.LargeKept);
        PayloadBuffers.Trim();
    }

    [Fact]
    public async Task WavesOfLargeWritesIntoFreshPages_MakeNoMoreBuffersThanWereEverOutAtOnce()
    {
        PayloadBuffers.Trim();
        var made = PayloadBuffers.LargeCreated;
        using var catalog = new MemoryExportCatalog(64 << 20, 64 << 20, 64 << 20, writesMayWait: false, sparse: true);
        await using var server = ServerHarness.Start(catalog);
        var clients = new List<TestNbdClient>();
        try
        {
            for (var i = 0; i < 16; i++)
            {
                var client = await server.ConnectAsync();
                clients.Add(client);
                await client.StartAsync();
                await client.GoAsync("faulty");
            }
            var block = new byte[128 * 1024];
            for (var wave = 0; wave < 3; wave++)
            {
                // Each client pipelines eight writes into pieces never written (they go to the thread pool).
                await Task.WhenAll(clients.Select(async (client, c) =>
                {
                    var cookies = new List<ulong>();
                    for (var k = 0; k < 8; k++)
                    {
                        var piece = (ulong)(wave * 128 + c * 8 + k);
                        cookies.Add(await client.SendRequestAsync(NbdCommand.Write, piece * 128 * 1024, 128 * 1024, payload: block));
                    }
                    for (var k = 0; k < cookies.Count; k++)
                    {
                        Assert.Equal(NbdError.None, (await client.ReadReplyAsync()).Error);
                    }
                }));
            }
            var created = PayloadBuffers.LargeCreated - made;
            var mostOut = server.Context.PayloadMemory.PeakInUse / (128 * 1024);
            Assert.True(created > 0, "the server's payload buffers do not come from PayloadBuffers");
            // Out at once under the payload allowance, plus at most one spare per connection (kept on its event loop while
            // busy, outside the allowance).
            Assert.True(created <= mostOut + clients.Count, $"{created} large buffers made for 384 writes, at most {mostOut} out at once");
        }
        finally
        {
            foreach (var client in clients)
            {
                await client.DisposeAsync();
            }
        }
    }
}
