using System.Diagnostics;
using NetSwap.Protocol.Nbd;
using NetSwap.Server.Access;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Access;

/// <summary>
/// The bandwidth caps on a running server: never more than 10 % over the cap, and not a tighter throttle than asked.
/// The second half times the server, so these run alone (<see cref="TimingCollection"/>): beside the other test classes
/// a starved test host once let three trials in a row reach only 73 % of the cap.
/// </summary>
[Collection(nameof(TimingCollection))]
public class BandwidthCapTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task BandwidthCap_IsHeldWithinTenPercent()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 64 * MiB, false));
        const long rate = 8 * MiB;
        server.Context.Policy = AccessTests.Policy(new AccessLimits { BandwidthPerClient = rate }, rules: ["allow 127.0.0.0/8"]);
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        await client.GoAsync("disk");
        var block = new byte[MiB];
        // Prime: spend the bucket's saved-up burst, so what is timed is the steady rate.
        await client.RequestAsync(NbdCommand.Write, 0, (uint)block.Length, payload: block);
        // The cap must hold in every trial: never more than 10 % above it. That it is not a tighter throttle than
        // asked (at least 90 %) needs a machine that lets the server run: the best of three trials must reach it, as
        // one trial on a host busy with something else may not.
        var best = 0.0;
        for (var trial = 0; trial < 3 && best < rate * 0.9; trial++)
        {
            var measured = await TimedWritesAsync(client, block);
            Assert.InRange(measured, 0, rate * 1.1);
            best = Math.Max(best, measured);
        }
        Assert.InRange(best, rate * 0.9, rate * 1.1);
    }

    [Fact]
    public async Task TotalBandwidthCap_HoldsForAllClientsTogether()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 64 * MiB, false));
        const long rate = 16 * MiB;
        server.Context.Policy = AccessTests.Policy(new AccessLimits { BandwidthTotal = rate }, rules: ["allow 127.0.0.0/8"]);
        var clients = new List<TestNbdClient>();
        for (var i = 0; i < 2; i++)
        {
            var client = await server.ConnectAsync();
            await client.StartAsync();
            await client.GoAsync("disk");
            clients.Add(client);
        }
        try
        {
            var block = new byte[MiB];
            await clients[0].RequestAsync(NbdCommand.Write, 0, (uint)block.Length, payload: block);
            // Each client alone could go far faster than the cap: together they must stay within it (as above: every
            // trial at most 10 % over, the best of three at least 90 % of it).
            var best = 0.0;
            for (var trial = 0; trial < 3 && best < rate * 0.9; trial++)
            {
                var started = Stopwatch.StartNew();
                await Task.WhenAll(clients.Select(c => TimedWritesAsync(c, block)));
                var together = clients.Count * 24.0 * MiB / started.Elapsed.TotalSeconds;
                Assert.InRange(together, 0, rate * 1.1);
                best = Math.Max(best, together);
            }
            Assert.InRange(best, rate * 0.9, rate * 1.1);
        }
        finally
        {
            foreach (var client in clients)
            {
                await client.DisposeAsync();
            }
        }
    }

    /// <summary>Bytes per second of 24 pipelined 1 MiB writes, replies read as they come: the server, not this
    /// client's round trips, sets the pace.</summary>
    private static async Task<double> TimedWritesAsync(TestNbdClient client, byte[] block)
    {
        const int blocks = 24;
        var started = Stopwatch.StartNew();
        var sending = Task.Run(async () =>
        {
            for (var i = 0; i < blocks; i++)
            {
                await client.SendRequestAsync(NbdCommand.Write, (ulong)(i % 32) * (ulong)MiB, (uint)block.Length, payload: block);
            }
        });
        for (var i = 0; i < blocks; i++)
        {
            Assert.Equal(NbdError.None, (await client.ReadReplyAsync()).Error);
        }
        await sending;
        return blocks * MiB / started.Elapsed.TotalSeconds;
    }
}
