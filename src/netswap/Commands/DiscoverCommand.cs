using System.Globalization;
using System.Net;
using System.Text.Json;
using NetSwap.Protocol.Discovery;

namespace NetSwap.Client.Commands;

/// <summary>`netswap discover`: the swap servers on the LAN, best first.</summary>
internal static class DiscoverCommand
{
    public static readonly CommandSpec Spec = new("discover", "",
        "Find swap servers on the LAN (IPv4 broadcast on every interface and 255.255.255.255, IPv6 multicast ff02::4e53:5750 on every interface), best first.",
        [
            new("--timeout", "DURATION", "How long to wait for answers. Default: 1s."),
            new("--json", null, "Write JSON instead of text."),
            new("--size", "SIZE", "The size of area to ask about: servers without room for it say full."),
            new("--port", "PORT", "The UDP port of discovery. Default: 9572."),
            new("--address", "SERVER[:PORT]", "Probe this server directly (unicast) instead of broadcasting; repeatable."),
        ],
        reader =>
        {
            var timeout = reader.Duration("--timeout", TimeSpan.FromSeconds(1));
            var json = reader.Flag("--json");
            var size = reader.OptionalSize("--size") ?? 0;
            var port = reader.OptionalInteger("--port", 1, 65535, "a port") ?? DiscoveryProtocol.Port;
            var addresses = reader.All("--address");
            reader.EnsureConsumed();
            return () => RunAsync(timeout, json, size, port, [.. addresses]);
        });

    private static async Task<int> RunAsync(TimeSpan timeout, bool json, long size, int port, string[] addressTexts)
    {
        // A probe to a server goes to its discovery port: --port, unless the address names another.
        var addresses = addressTexts.Select(a => ServerAddress.Parse(a) is var e && e.Port == ServerAddress.DefaultPort ? new IPEndPoint(e.Address, port) : e).ToList();
        var servers = await Discovery.ServerFinder.DiscoverAsync(timeout, (ulong)size, MachineToken.Get(), port, addresses.Count > 0 ? addresses : null);
        if (json)
        {
            var rows = servers.Select(s => new ServerJson(s.Address.ToString(), s.Reply.NbdPort, s.Admits, s.Reply.FreeCapacity, s.Reply.MaxSize, s.Reply.Clients,
                s.Reply.LoadPerMille, s.Reply.Flags.HasFlag(DiscoveryReplyFlags.TlsOffered), s.Reply.Flags.HasFlag(DiscoveryReplyFlags.TlsRequired),
                s.Reply.ServerName, s.Reply.ServerVersion, Math.Round(s.RoundTrip.TotalMilliseconds, 2))).ToList();
            await Console.Out.WriteLineAsync(JsonSerializer.Serialize(rows, ClientJsonContext.Default.ListServerJson));
            return servers.Count > 0 ? 0 : 1;
        }
        if (servers.Count == 0)
        {
            await Console.Error.WriteLineAsync($"netswap: no swap server answered within {timeout.TotalSeconds:0.###} s");
        }
        foreach (var s in servers)
        {
            var r = s.Reply;
            var tls = r.Flags.HasFlag(DiscoveryReplyFlags.TlsRequired) ? "tls-required" : r.Flags.HasFlag(DiscoveryReplyFlags.TlsOffered) ? "tls" : "plain";
            await Console.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"{s.Address}:{r.NbdPort}\t{(s.Admits ? "admits" : "full")}\tfree {r.FreeCapacity >> 20} MiB\tmax {r.MaxSize >> 20} MiB\t{r.Clients} clients\tload {r.LoadPerMille / 10.0:0.#}%\t{tls}\t{s.RoundTrip.TotalMilliseconds:F1} ms\t{r.ServerName} {r.ServerVersion}"));
        }
        return servers.Count > 0 ? 0 : 1;
    }
}
