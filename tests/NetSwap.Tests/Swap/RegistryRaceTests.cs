using System.Net;
using NetSwap.Protocol.Swap;
using NetSwap.Server.Exports;
using NetSwap.Server.Exports.Swap;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Swap;

/// <summary>
/// Swap-area transitions are one step under the registry's lock (issue 14, item 4). The grace timer's check that an
/// area is still in grace and its destruction used to be two steps; a reattach between them got the area back and then
/// lost it under a live client. The seam below runs a reattach exactly there.
/// </summary>
public class RegistryRaceTests
{
    [Fact]
    public async Task ReattachRacingTheGraceTimer_NeverLosesTheAreaItGot()
    {
        var directory = Directory.CreateTempSubdirectory("netswap-race-").FullName;
        try
        {
            var options = new SwapOptions { Directory = directory, DefaultSize = 1L << 20, Grace = TimeSpan.FromMilliseconds(200), Allocation = SwapAllocation.Sparse };
            using var registry = new SwapAreaRegistry(options, SwapDirectory.Prepare(directory, isDefault: false, out _), new CapturingLogger());
            var name = new SwapExportName("pc01", null);
            var client = new ConnectionInfo(1, "127.0.0.1:1000", IPAddress.Loopback);
            var (first, _, reason) = await registry.AttachAsync(name, "swap/pc01", client, () => { }, CancellationToken.None);
            Assert.True(first is not null, reason);

            Task<(SwapArea? Area, NetSwap.Protocol.Nbd.NbdOptionReplyType Error, string? Reason)>? reattach = null;
            var expiring = new TaskCompletionSource();
            registry.ExpiryChecked = _ =>
            {
                // The client comes back between the timer's check and its act.
                reattach = Task.Run(async () => await registry.AttachAsync(name, "swap/pc01", client with { Id = 2 }, () => { }, CancellationToken.None));
                // Give it every chance to run through (it cannot while the transition holds the lock).
                reattach.Wait(TimeSpan.FromMilliseconds(300));
                expiring.TrySetResult();
            };
            registry.Release(first!, clean: false);
            await expiring.Task.WaitAsync(TimeSpan.FromSeconds(10));
            var (second, _, why) = await reattach!.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.True(second is not null, why);
            // Whichever area the client holds now is alive and is the only one counted.
            Assert.NotEqual(SwapAreaState.Destroyed, second!.State);
            Assert.Equal(SwapAreaState.Destroyed, first!.State);
            Assert.Equal([second.Id], registry.Snapshot().Select(a => a.Id));
            Assert.Equal(second.Size, registry.Committed);
            Assert.NotSame(first, second);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
