using System.Net;
using NetSwap.Protocol.Discovery;
using NetSwap.Protocol.Swap;
using NetSwap.Server.Exports;
using NetSwap.Server.Exports.Swap;
using NetSwap.Server.Hosting;
using NetSwap.Server.Tls;

namespace NetSwap.Server.Discovery;

/// <summary>What a server tells a probing client: where to connect, whether TLS is needed, and how much room it has.</summary>
internal static class DiscoveryAnswer
{
    public static DiscoveryReply Build(IPAddress client, DiscoveryProbe probe, NbdServer server, ExportCatalog catalog, ushort nbdPort, string version, string name)
    {
        var context = server.Context;
        var flags = DiscoveryReplyFlags.None;
        var tls = context.Tls;
        if (tls.Mode != TlsMode.Off)
        {
            flags |= DiscoveryReplyFlags.TlsOffered;
        }
        if (tls.Mode == TlsMode.Require || tls.TlsOnlyExports.Contains(SwapExportName.Prefix))
        {
            flags |= DiscoveryReplyFlags.TlsRequired;
        }
        ulong free = 0;
        ulong maxSize = 0;
        ushort load = 0;
        if (catalog.Swap is { } swap && context.Policy.CheckExport(SwapExportName.Prefix, client) is null)
        {
            var registry = swap.Registry;
            var options = registry.Options;
            var committed = registry.Committed;
            long total = 0, available = 0;
            try
            {
                (total, available) = registry.Directory.Space();
            }
            catch (IOException)
            {
            }
            var keep = (long)(total * options.ReservePercent / 100);
            var byDisk = options.Allocation == SwapAllocation.Reserve ? available - keep : available;
            var byBudget = options.Budget > 0 ? options.Budget - committed : long.MaxValue;
            var room = Math.Max(0, Math.Min(byDisk, byBudget));
            free = (ulong)Math.Min(room, options.MaxSize);
            maxSize = (ulong)options.MaxSize;
            var capacity = options.Budget > 0 ? options.Budget : Math.Max(1, total - keep);
            load = (ushort)Math.Clamp(committed * 1000 / capacity, 0, 1000);
            if (free >= SwapHeader.MinimumSize)
            {
                flags |= DiscoveryReplyFlags.SwapAvailable;
            }
        }
        return new DiscoveryReply(probe.ProbeId, flags, nbdPort, (uint)server.ConnectionCount, load, free, maxSize, version, name);
    }
}
