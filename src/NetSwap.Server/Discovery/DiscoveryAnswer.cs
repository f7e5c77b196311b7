using System.Net;
using NetSwap.Protocol.Discovery;
using NetSwap.Protocol.Swap;
using NetSwap.Server.Exports;
using NetSwap.Server.Exports.Swap;
using NetSwap.Server.Hosting;

namespace NetSwap.Server.Discovery;

/// <summary>What a server tells a probing client: where to connect, whether TLS is needed, and how much room it has.</summary>
internal static class DiscoveryAnswer
{
    public static DiscoveryReply Build(IPAddress client, DiscoveryProbe probe, NbdServer server, ExportCatalog catalog, ushort nbdPort, string version, string name)
    {
        var gate = server.Context.Gate;
        var flags = DiscoveryReplyFlags.None;
        if (gate.OffersTls)
        {
            flags |= DiscoveryReplyFlags.TlsOffered;
        }
        if (gate.SwapRequiresTls)
        {
            flags |= DiscoveryReplyFlags.TlsRequired;
        }
        ulong free = 0;
        ulong maxSize = 0;
        ushort load = 0;
        if (catalog.Swap is { } swap && gate.ExportAllows(SwapExportName.Prefix, client))
        {
            // The registry's own admission arithmetic, pending allocations included: never an offer admission refuses.
            var (largest, committed, capacity) = swap.Registry.Capacity();
            free = (ulong)largest;
            maxSize = (ulong)swap.Registry.Options.MaxSize;
            load = (ushort)Math.Clamp(committed * 1000 / capacity, 0, 1000);
            if (free >= SwapHeader.MinimumSize)
            {
                flags |= DiscoveryReplyFlags.SwapAvailable;
            }
        }
        return new DiscoveryReply(probe.ProbeId, flags, nbdPort, (uint)server.ConnectionCount, load, free, maxSize, version, name);
    }
}
