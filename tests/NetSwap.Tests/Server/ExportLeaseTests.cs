using System.Net;
using NetSwap.Fuzz;
using NetSwap.Server.Access;
using NetSwap.Server.Exports;
using NetSwap.Server.Hosting;

namespace NetSwap.Tests.Server;

/// <summary>
/// An attach's lease gives its per-export place back exactly once, however many paths race to release it (the
/// handshake's failure path, the connection's end, a shutdown): hunted over many rounds with the releases let go
/// together by a barrier. A place given back twice would let one client more past max-clients-per-export.
/// </summary>
public class ExportLeaseTests
{
    [Fact]
    public async Task ALeaseReleasedFromManyThreadsAtOnce_GivesItsPlaceBackOnce()
    {
        var policy = new AccessPolicy(new AddressRuleSet([new AddressRule(IPNetwork.Parse("0.0.0.0/0"), RuleAction.Allow, "t")]),
            new Dictionary<string, AddressRuleSet>(), null, new AccessLimits { MaxClientsPerExport = 2 });
        using var catalog = new MemoryExportCatalog(1 << 20, 1 << 20, 1 << 20);
        var info = new ConnectionInfo(1, "test");
        var offer = catalog.Lookup("faulty", info).Offer!;
        const int Racers = 8;
        for (var round = 0; round < 200; round++)
        {
            var gate = new AdmissionGate(policy);
            Assert.True(gate.TryEnterExport("faulty"));
            Assert.True(gate.TryEnterExport("faulty"));
            var backend = (await offer.AttachAsync(new AttachContext(info, () => { }, CancellationToken.None))).Backend!;
            var lease = new ExportLease(gate, "faulty", backend);
            using var start = new Barrier(Racers);
            // Threads of their own: racers blocked in the barrier on pool threads waited for the pool to grow to eight,
            // which under a loaded CI run took longer than the time-out (one run failed so).
            var racers = Enumerable.Range(0, Racers).Select(i => new Thread(() =>
            {
                start.SignalAndWait();
                if (i % 2 == 0)
                {
                    lease.Release(cleanDisconnect: false);
                }
                else
                {
                    lease.Dispose();
                }
            }) { IsBackground = true }).ToArray();
            foreach (var racer in racers)
            {
                racer.Start();
            }
            foreach (var racer in racers)
            {
                Assert.True(racer.Join(TimeSpan.FromSeconds(10)), $"round {round}: a release did not return");
            }
            // One place was given back: one more client fits, a second does not.
            Assert.True(gate.TryEnterExport("faulty"), $"round {round}: the place was not given back");
            Assert.False(gate.TryEnterExport("faulty"), $"round {round}: the place was given back twice");
        }
    }
}
