using System.Net;
using System.Net.Sockets;
using NetSwap.Protocol.Discovery;
using NetSwap.Protocol.Swap;
using NetSwap.Server.Exports;
using NetSwap.Server.Exports.Swap;
using NetSwap.Server.Hosting;

namespace NetSwap.Server.Discovery;

/// <summary>What a server tells a probing client: where to connect, whether TLS is needed, and how much room it has.</summary>
internal static class DiscoveryAnswer
{
    /// <summary>
    /// The NBD port a client that probed over <paramref name="client"/>'s address family can connect to: that of the
    /// first listener taking that family (a dual-stack [::] listener takes IPv4 too), or null when none does. A client
    /// connects to the address the answer came from, so an answer over a family nothing listens on would send it to a
    /// closed port (a server with --listen 10.0.0.1:9572 answering an IPv6 probe from its link-local address).
    /// </summary>
    public static ushort? ListenerPort(IEnumerable<Socket> listeners, IPAddress client)
    {
        foreach (var listener in listeners)
        {
            if (listener.LocalEndPoint is not IPEndPoint local)
            {
                continue;
            }
            var takes = local.AddressFamily == client.AddressFamily
                || (client.AddressFamily == AddressFamily.InterNetwork && local.AddressFamily == AddressFamily.InterNetworkV6
                    && local.Address.Equals(IPAddress.IPv6Any) && listener.DualMode);
            if (takes)
            {
                return (ushort)local.Port;
            }
        }
        return null;
    }

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
