using System.Globalization;
using System.Net;
using NetSwap.Client;
using NetSwap.Protocol.Discovery;
using NetSwap.Protocol.Nbd;

return await ClientProgram.RunAsync(args);

namespace NetSwap.Client
{
    internal static class ClientProgram
    {
        public const int DefaultPort = 9572;

        private const string Usage = """
            Usage: netswap COMMAND [OPTIONS]

            The NetSwap client.

            Commands:
              discover [--timeout 1s] [--json] [--size SIZE] [--port PORT] [--address ADDR]...
                                               Find swap servers on the LAN (IPv4 broadcast on every interface and
                                               255.255.255.255, IPv6 multicast ff02::4e53:5750 on every interface),
                                               best first. --address probes one server directly.
              exports SERVER[:PORT] [--json]   List the exports a server offers (name, size, flags).
              help                             Show this help.
              version                          Show the version.

            SERVER is an IP address (IPv4, or IPv6 in brackets when a port follows): netswap resolves no host names,
            so that it works from a bare initramfs. The default port is 9572.
            """;

        public static async Task<int> RunAsync(string[] args)
        {
            if (args.Length == 0 || args[0] is "help" or "--help" or "-h")
            {
                Console.Out.Write(Usage);
                return args.Length == 0 ? 2 : 0;
            }
            try
            {
                return args[0] switch
                {
                    "version" or "--version" => Version(),
                    "exports" => await ExportsAsync(args[1..]),
                    "discover" => await DiscoverAsync(args[1..]),
                    _ => throw new UsageException($"unknown command '{args[0]}' (see netswap help)"),
                };
            }
            catch (UsageException e)
            {
                await Console.Error.WriteLineAsync($"netswap: {e.Message}");
                return 2;
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or NbdProtocolException or OperationCanceledException)
            {
                await Console.Error.WriteLineAsync($"netswap: {e.Message}");
                return 1;
            }
        }

        private static int Version()
        {
            Console.Out.WriteLine($"netswap {typeof(ClientProgram).Assembly.GetName().Version?.ToString(3)}");
            return 0;
        }

        private static async Task<int> ExportsAsync(string[] args)
        {
            var json = args.Contains("--json");
            var positional = args.Where(a => !a.StartsWith("--", StringComparison.Ordinal)).ToArray();
            if (positional.Length != 1)
            {
                throw new UsageException("exports needs exactly one SERVER[:PORT]");
            }
            var server = ParseServer(positional[0]);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await using var probe = await NbdProbe.ConnectAsync(server, cts.Token);
            var exports = await probe.ListAsync(cts.Token);
            var output = Console.Out;
            if (json)
            {
                output.WriteLine("[");
                for (var i = 0; i < exports.Count; i++)
                {
                    var e = exports[i];
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"  {{\"name\": {Quote(e.Name)}, \"size\": {e.Size}, \"read_only\": {Bool(e.Flags, NbdTransmissionFlags.ReadOnly)}, \"multi_conn\": {Bool(e.Flags, NbdTransmissionFlags.CanMultiConn)}, \"description\": {(e.Description is null ? "null" : Quote(e.Description))}}}{(i + 1 < exports.Count ? "," : "")}"));
                }
                output.WriteLine("]");
            }
            else
            {
                foreach (var e in exports)
                {
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{e.Name}\t{e.Size}\t{e.Flags}\t{e.Description}"));
                }
            }
            return 0;
        }

        private static async Task<int> DiscoverAsync(string[] args)
        {
            var options = new ArgumentReader(args);
            var json = options.Flag("--json");
            var timeout = options.Duration("--timeout", TimeSpan.FromSeconds(1));
            var size = options.Size("--size", 0);
            var port = options.Integer("--port", DiscoveryProtocol.Port);
            var addresses = options.All("--address").Select(a => ParseServer(a) is var e && e.Port == DefaultPort ? new IPEndPoint(e.Address, port) : e).ToList();
            options.EnsureConsumed();
            var servers = await Discovery.ServerFinder.DiscoverAsync(timeout, (ulong)size, MachineToken.Get(), port, addresses.Count > 0 ? addresses : null);
            var output = Console.Out;
            if (json)
            {
                output.WriteLine("[");
                for (var i = 0; i < servers.Count; i++)
                {
                    var s = servers[i];
                    var r = s.Reply;
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"  {{\"address\": {Quote(s.Address.ToString())}, \"port\": {r.NbdPort}, \"admits\": {(s.Admits ? "true" : "false")}, \"free_capacity\": {r.FreeCapacity}, \"max_size\": {r.MaxSize}, \"clients\": {r.Clients}, \"load_per_mille\": {r.LoadPerMille}, \"tls_offered\": {Flag(r.Flags, NetSwap.Protocol.Discovery.DiscoveryReplyFlags.TlsOffered)}, \"tls_required\": {Flag(r.Flags, NetSwap.Protocol.Discovery.DiscoveryReplyFlags.TlsRequired)}, \"name\": {Quote(r.ServerName)}, \"version\": {Quote(r.ServerVersion)}, \"rtt_ms\": {s.RoundTrip.TotalMilliseconds:F2}}}{(i + 1 < servers.Count ? "," : "")}"));
                }
                output.WriteLine("]");
            }
            else
            {
                if (servers.Count == 0)
                {
                    await Console.Error.WriteLineAsync($"netswap: no swap server answered within {timeout.TotalSeconds:0.###} s");
                }
                foreach (var s in servers)
                {
                    var r = s.Reply;
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{s.Address}:{r.NbdPort}\t{(s.Admits ? "admits" : "full")}\tfree {r.FreeCapacity >> 20} MiB\tmax {r.MaxSize >> 20} MiB\t{r.Clients} clients\tload {r.LoadPerMille / 10.0:0.#}%\t{(r.Flags.HasFlag(NetSwap.Protocol.Discovery.DiscoveryReplyFlags.TlsRequired) ? "tls-required" : r.Flags.HasFlag(NetSwap.Protocol.Discovery.DiscoveryReplyFlags.TlsOffered) ? "tls" : "plain")}\t{s.RoundTrip.TotalMilliseconds:F1} ms\t{r.ServerName} {r.ServerVersion}"));
                }
            }
            return servers.Count > 0 ? 0 : 1;
        }

        private static string Flag(NetSwap.Protocol.Discovery.DiscoveryReplyFlags flags, NetSwap.Protocol.Discovery.DiscoveryReplyFlags flag) => (flags & flag) != 0 ? "true" : "false";

        private static string Bool(NbdTransmissionFlags flags, NbdTransmissionFlags flag) => (flags & flag) != 0 ? "true" : "false";

        private static string Quote(string text)
        {
            var builder = new System.Text.StringBuilder("\"");
            foreach (var c in text)
            {
                builder.Append(c switch
                {
                    '"' => "\\\"",
                    '\\' => "\\\\",
                    < ' ' => string.Create(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}"),
                    _ => c.ToString(),
                });
            }
            return builder.Append('"').ToString();
        }

        /// <summary>"10.0.0.1", "10.0.0.1:9572", "[fe80::1]:9572", "::1". No name resolution (static binaries cannot).</summary>
        internal static IPEndPoint ParseServer(string text)
        {
            if (IPAddress.TryParse(text, out var bare))
            {
                return new IPEndPoint(bare, DefaultPort);
            }
            if (IPEndPoint.TryParse(text, out var endpoint) && endpoint.Port != 0)
            {
                return endpoint;
            }
            throw new UsageException($"'{text}' is not an IP address with an optional :PORT");
        }
    }

    internal sealed class UsageException(string message) : Exception(message);

    /// <summary>--name VALUE / --name=VALUE / --flag options of one command; anything unknown is a usage error.</summary>
    internal sealed class ArgumentReader
    {
        private readonly List<string> _args;

        public ArgumentReader(IEnumerable<string> args) => _args = [.. args];

        public List<string> Positional { get; } = [];

        public bool Flag(string name) => _args.Remove(name);

        public string? Value(string name)
        {
            var values = All(name);
            return values.Count == 0 ? null : values[^1];
        }

        public List<string> All(string name)
        {
            var values = new List<string>();
            for (var i = 0; i < _args.Count;)
            {
                if (_args[i] == name)
                {
                    if (i + 1 >= _args.Count)
                    {
                        throw new UsageException($"option '{name}' needs a value");
                    }
                    values.Add(_args[i + 1]);
                    _args.RemoveRange(i, 2);
                }
                else if (_args[i].StartsWith(name + "=", StringComparison.Ordinal))
                {
                    values.Add(_args[i][(name.Length + 1)..]);
                    _args.RemoveAt(i);
                }
                else
                {
                    i++;
                }
            }
            return values;
        }

        public TimeSpan Duration(string name, TimeSpan fallback)
        {
            var text = Value(name);
            if (text is null)
            {
                return fallback;
            }
            var t = text.Trim();
            var (number, scale) = t.EndsWith("ms", StringComparison.Ordinal) ? (t[..^2], 0.001) : t.EndsWith('s') ? (t[..^1], 1.0) : (t, 1.0);
            return double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && value > 0
                ? TimeSpan.FromSeconds(value * scale)
                : throw new UsageException($"option '{name}': '{text}' is not a duration (examples: 1s, 500ms)");
        }

        public long Size(string name, long fallback)
        {
            var text = Value(name);
            if (text is null)
            {
                return fallback;
            }
            return NetSwap.Protocol.Swap.SwapExportName.TryParseSize(text.Trim(), out var bytes) && bytes > 0
                ? bytes
                : throw new UsageException($"option '{name}': '{text}' is not a size (examples: 512M, 1G)");
        }

        public int Integer(string name, int fallback)
        {
            var text = Value(name);
            if (text is null)
            {
                return fallback;
            }
            return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) && value > 0
                ? value
                : throw new UsageException($"option '{name}': '{text}' is not a positive whole number");
        }

        /// <summary>Whatever is left must be positional; an unknown option is an error, not silently ignored.</summary>
        public void EnsureConsumed(int maxPositional = 0)
        {
            foreach (var arg in _args)
            {
                if (arg.StartsWith("--", StringComparison.Ordinal))
                {
                    throw new UsageException($"unknown option '{arg}'");
                }
                Positional.Add(arg);
            }
            if (Positional.Count > maxPositional)
            {
                throw new UsageException($"unexpected argument '{Positional[maxPositional]}'");
            }
        }
    }
}
