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
              attach [SERVER[:PORT]] [--device /dev/nbdN|auto] [--size SIZE] [--token T] [--encrypt] [--priority N]
                     [--mode reconnect|netlink|persist] [--reconnect-for 2m] [--io-timeout 5s]
                     [--auto] [--config FILE] [--timeout 2s]
                                               Attach swap: discover a server when none is given, connect a free
                                               /dev/nbdN with nbd-client (-swap -b 4096), dm-crypt with a random key
                                               (--encrypt), mkswap when needed, swapon. reconnect mode (default):
                                               nbd-client by netlink plus `netswap keep`, which replaces a broken
                                               connection within --reconnect-for while the kernel holds requests;
                                               a request unanswered for --io-timeout counts the connection dead.
                                               --auto applies client.conf's SWAP and THRESHOLD and the kernel's
                                               netswap=off (for boot scripts). Swap attached here already (and no
                                               --device given): says so and exits 0.
              detach [--device /dev/nbdN | --all]     swapoff, close dm-crypt, nbd-client -d, in that order.
              keep --device /dev/nbdN --server ADDR:PORT --export NAME [--reconnect-for 2m] [--ready-file PATH]
                                               The resident reconnect keeper `attach` starts (not for direct use):
                                               locked in memory, logs to the kernel log.
              status [--json]                  The swap attached here: device, server, size, used, encrypted.
              server-status [--json] [--control-socket PATH]
                                               Ask a netswapd on this host for its clients and swap areas.
              discover [--timeout 1s] [--json] [--size SIZE] [--port PORT] [--address ADDR]...
                                               Find swap servers on the LAN (IPv4 broadcast on every interface and
                                               255.255.255.255, IPv6 multicast ff02::4e53:5750 on every interface),
                                               best first. --address probes one server directly.
              exports SERVER[:PORT] [--json]   List the exports a server offers (name, size, flags).
              help                             Show this help.
              version                          Show the version.

            SERVER is an IP address (IPv4, or IPv6 in brackets when a port follows) or a host name, which is resolved
            where a resolver exists (/etc/hosts, DNS; an initramfs usually has neither: give an address there).
            The default port is 9572.
            """;

        public static async Task<int> RunAsync(string[] args)
        {
            try
            {
                return await RunCommandAsync(args);
            }
            finally
            {
                // NETSWAP_RSS=1: report the peak resident memory, to show the client fits a 32 MB machine.
                if (Environment.GetEnvironmentVariable("NETSWAP_RSS") is not null && File.Exists("/proc/self/status"))
                {
                    var peak = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
                    await Console.Error.WriteLineAsync($"netswap: peak RSS {peak?["VmHWM:".Length..].Trim()}");
                }
            }
        }

        private static async Task<int> RunCommandAsync(string[] args)
        {
            if (args.Length == 0 || args[0] is "help" or "--help" or "-h")
            {
                // `netswap help attach` as well as `netswap attach --help`.
                if (args is [_, var topic] && CommandHelp(topic) is { } help)
                {
                    Console.Out.Write(help);
                    return 0;
                }
                Console.Out.Write(Usage);
                return args.Length == 0 ? 2 : 0;
            }
            if (args.Length > 1 && args[1..].Any(a => a is "--help" or "-h"))
            {
                if (CommandHelp(args[0]) is not { } help)
                {
                    await Console.Error.WriteLineAsync($"netswap: unknown command '{args[0]}' (see netswap help)");
                    return 2;
                }
                Console.Out.Write(help);
                return 0;
            }
            try
            {
                return args[0] switch
                {
                    "version" or "--version" => Version(),
                    "exports" => await ExportsAsync(args[1..]),
                    "discover" => await DiscoverAsync(args[1..]),
                    "attach" => await AttachAsync(args[1..]),
                    "detach" => await DetachAsync(args[1..]),
                    "keep" => await Attach.KeepCommand.RunAsync(args[1..]),
                    "status" => Status(args[1..]),
                    "server-status" => await ServerStatusAsync(args[1..]),
                    _ => throw new UsageException($"unknown command '{args[0]}' (see netswap help)"),
                };
            }
            catch (UsageException e)
            {
                await Console.Error.WriteLineAsync($"netswap: {e.Message}");
                return 2;
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or NbdProtocolException or OperationCanceledException
                or Attach.AttachException or FormatException or UnauthorizedAccessException or Kernel.NetlinkException)
            {
                await Console.Error.WriteLineAsync($"netswap: {e.Message}");
                return 1;
            }
        }

        /// <summary>
        /// One command's part of <see cref="Usage"/>: its entry (the line that names it and the more deeply indented
        /// lines under it) and the note on SERVER; null for a name that is no command.
        /// </summary>
        internal static string? CommandHelp(string command)
        {
            var lines = Usage.Split('\n');
            var start = Array.FindIndex(lines, l => l.StartsWith($"  {command} ", StringComparison.Ordinal) || l.TrimEnd() == $"  {command}");
            if (start < 0 || command is "help" or "version")
            {
                return null;
            }
            var text = new System.Text.StringBuilder("Usage: netswap ").AppendLine(lines[start].Trim());
            for (var i = start + 1; i < lines.Length && lines[i].StartsWith("   ", StringComparison.Ordinal); i++)
            {
                text.AppendLine(lines[i]);
            }
            var note = Array.FindIndex(lines, l => l.StartsWith("SERVER is", StringComparison.Ordinal));
            text.AppendLine();
            for (var i = note; i < lines.Length && lines[i].Length > 0; i++)
            {
                text.AppendLine(lines[i]);
            }
            return text.ToString();
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

        private static Attach.SwapAttacher Attacher() => new(new Attach.ProcessRunner(), new Attach.LinuxSwapSystem(), new Attach.SystemPaths(), Console.Error);

        private static async Task<int> AttachAsync(string[] args)
        {
            var options = new ArgumentReader(args);
            var auto = options.Flag("--auto");
            var encryptFlag = options.Flag("--encrypt");
            var configPath = options.Value("--config") ?? Attach.ClientConfig.DefaultPath;
            var device = options.Value("--device") ?? "auto";
            var size = options.OptionalSize("--size");
            var token = options.Value("--token");
            var priority = options.Value("--priority") is { } p ? int.Parse(p, CultureInfo.InvariantCulture) : (int?)null;
            var mode = (options.Value("--mode") ?? "reconnect") switch
            {
                "reconnect" => Attach.NbdClientMode.Reconnect,
                "persist" => Attach.NbdClientMode.Persist,
                "netlink" => Attach.NbdClientMode.Netlink,
                var m => throw new UsageException($"--mode: '{m}' is not reconnect, netlink or persist"),
            };
            var reconnectFor = options.Duration("--reconnect-for", Attach.AttachRequest.DefaultReconnectFor);
            var ioTimeout = options.Duration("--io-timeout", Attach.AttachRequest.DefaultIoTimeout);
            var timeout = options.Duration("--timeout", TimeSpan.FromSeconds(2));
            options.EnsureConsumed(maxPositional: 1);
            if (device != "auto" && !device.StartsWith("/dev/nbd", StringComparison.Ordinal))
            {
                throw new UsageException($"--device: '{device}' is not /dev/nbdN or auto");
            }
            var commandLine = File.Exists("/proc/cmdline") ? await File.ReadAllTextAsync("/proc/cmdline") : null;
            var config = Attach.ClientConfig.Load(configPath, commandLine);
            if (auto)
            {
                if (config.Swap == Attach.SwapPolicy.No)
                {
                    await Console.Out.WriteLineAsync($"netswap: swap disabled ({config.OffBecause})");
                    return 0;
                }
                var memory = Attach.ClientConfig.MemTotal();
                if (config.Swap == Attach.SwapPolicy.Auto && memory >= config.Threshold)
                {
                    await Console.Out.WriteLineAsync($"netswap: {memory >> 20} MiB of memory is not below THRESHOLD ({config.Threshold >> 20} MiB): no network swap needed");
                    return 0;
                }
            }
            // Attached already (the initramfs did it, or an earlier run): say so, and leave it be.
            if (device == "auto" && Attacher().ActiveAttachment() is { } active)
            {
                await Console.Out.WriteLineAsync($"netswap: swap already attached here: {active.Target} ({active.Size >> 20} MiB from {active.Server}, export {active.Export}); nothing to do");
                return 0;
            }
            size ??= config.Size;
            token ??= config.Token ?? MachineToken.Get();
            var serverText = options.Positional.FirstOrDefault() ?? config.Server;
            IPEndPoint server;
            if (serverText is not null)
            {
                server = ParseServer(serverText, options.Positional.Count == 0 ? config.Port ?? DefaultPort : DefaultPort);
            }
            else
            {
                var found = await Discovery.ServerFinder.DiscoverAsync(timeout, (ulong)(size ?? 0), token, DiscoveryProtocol.Port);
                var best = found.FirstOrDefault(f => f.Admits && f.Reply.FreeCapacity >= (ulong)(size ?? 0))
                    ?? throw new Attach.AttachException(found.Count == 0
                        ? $"no swap server answered discovery within {timeout.TotalSeconds:0.#} s; give one: netswap attach SERVER"
                        : $"{found.Count} servers answered but none has room for {(size ?? 0) >> 20} MiB");
                server = best.NbdEndpoint;
                await Console.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"netswap: found {best.Reply.ServerName} at {server} ({best.Reply.FreeCapacity >> 20} MiB free, {best.RoundTrip.TotalMilliseconds:F1} ms)"));
            }
            var attached = await Attacher().AttachAsync(new Attach.AttachRequest(server, device, size, token, encryptFlag || config.Encrypt, priority ?? config.Priority, mode)
            {
                ReconnectFor = reconnectFor,
                IoTimeout = ioTimeout,
            });
            await Console.Out.WriteLineAsync($"netswap: swap on {attached.Target} ({attached.Size >> 20} MiB from {attached.Server}, export {attached.Export}{(attached.Encrypted ? ", encrypted" : "")})");
            return 0;
        }

        private static async Task<int> DetachAsync(string[] args)
        {
            var options = new ArgumentReader(args);
            var all = options.Flag("--all");
            var device = options.Value("--device");
            options.EnsureConsumed();
            var attacher = Attacher();
            var attached = attacher.Attached();
            var chosen = device is null ? attached : attached.Where(a => a.Device == device).ToList();
            if (device is null && !all && attached.Count > 1)
            {
                throw new UsageException($"{attached.Count} swap devices are attached: name one with --device, or use --all");
            }
            if (chosen.Count == 0)
            {
                await Console.Error.WriteLineAsync(device is null ? "netswap: no network swap is attached" : $"netswap: {device} is not attached by netswap");
                return device is null ? 0 : 1;
            }
            var ok = true;
            foreach (var swap in chosen)
            {
                ok &= await attacher.DetachAsync(swap);
                await Console.Out.WriteLineAsync($"netswap: {swap.Device} {(ok ? "detached" : "not fully detached")}");
            }
            return ok ? 0 : 1;
        }

        private static int Status(string[] args)
        {
            var options = new ArgumentReader(args);
            var json = options.Flag("--json");
            options.EnsureConsumed();
            var attacher = Attacher();
            var usage = attacher.SwapUsage();
            var rows = attacher.Attached().Select(a =>
            {
                var resolved = new FileInfo(a.Target).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? a.Target;
                var used = usage.GetValueOrDefault(a.Target, usage.GetValueOrDefault(resolved, -1));
                return (Swap: a, Used: used);
            }).ToList();
            var output = Console.Out;
            if (json)
            {
                output.WriteLine("[");
                for (var i = 0; i < rows.Count; i++)
                {
                    var (a, used) = rows[i];
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"  {{\"device\": {Quote(a.Device)}, \"swap_device\": {Quote(a.Target)}, \"server\": {Quote(a.Server)}, \"export\": {Quote(a.Export)}, \"size\": {a.Size}, \"used\": {used}, \"active\": {(used >= 0 ? "true" : "false")}, \"encrypted\": {(a.Encrypted ? "true" : "false")}}}{(i + 1 < rows.Count ? "," : "")}"));
                }
                output.WriteLine("]");
                return 0;
            }
            if (rows.Count == 0)
            {
                output.WriteLine("no network swap attached");
                return 0;
            }
            output.WriteLine($"{"DEVICE",-12}{"SWAP ON",-26}{"SERVER",-28}{"SIZE",10}{"USED",10}  ENCRYPTED");
            foreach (var (a, used) in rows)
            {
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{a.Device,-12}{a.Target,-26}{a.Server,-28}{a.Size >> 20,9}M{(used < 0 ? "off" : (used >> 20) + "M"),10}  {(a.Encrypted ? "yes" : "no")}"));
            }
            return 0;
        }

        private static async Task<int> ServerStatusAsync(string[] args)
        {
            var options = new ArgumentReader(args);
            var json = options.Flag("--json");
            var path = options.Value("--control-socket") ?? "/run/netswap/netswapd.sock";
            options.EnsureConsumed();
            var reply = await NetSwap.Protocol.Control.ServerStatusText.QueryAsync(path);
            if (json)
            {
                await Console.Out.WriteAsync(reply);
                return 0;
            }
            var status = NetSwap.Protocol.Control.ControlJsonContext.Deserialize(reply) ?? throw new FormatException("unreadable answer from netswapd");
            await Console.Out.WriteAsync(NetSwap.Protocol.Control.ServerStatusText.Format(status));
            return 0;
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

        /// <summary>
        /// SERVER[:PORT]: an IP address, or a host name resolved by the system's resolver (the first address it gives).
        /// A malformed one is a usage error; a name that does not resolve fails the command (exit 1).
        /// </summary>
        internal static IPEndPoint ParseServer(string text, int defaultPort = DefaultPort)
        {
            // An endpoint first: IPAddress.TryParse takes "[::1]:9001" too, and drops the port.
            if (IPEndPoint.TryParse(text, out var endpoint) && endpoint.Port != 0 && (text.StartsWith('[') || text.Count(c => c == ':') == 1))
            {
                return endpoint;
            }
            if (IPAddress.TryParse(text, out var bare) && !text.Contains("]:", StringComparison.Ordinal))
            {
                return new IPEndPoint(bare, defaultPort);
            }
            var colon = text.LastIndexOf(':');
            var (host, port) = colon < 0 ? (text, defaultPort)
                : int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var p) && p is > 0 and <= 65535
                    ? (text[..colon], p)
                    : throw new UsageException($"'{text}' is not an IP address or host name with an optional :PORT");
            if (Uri.CheckHostName(host) != UriHostNameType.Dns)
            {
                throw new UsageException($"'{text}' is not an IP address or host name with an optional :PORT");
            }
            IPAddress[] addresses;
            try
            {
                addresses = Dns.GetHostAddresses(host);
            }
            catch (System.Net.Sockets.SocketException e)
            {
                throw new Attach.AttachException($"cannot resolve '{host}' ({e.Message}): give the server's IP address");
            }
            // IPv4 first: a lab's server is reachable by it wherever it is by IPv6, not always the other way round.
            var address = addresses.FirstOrDefault(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork) ?? addresses.FirstOrDefault()
                ?? throw new Attach.AttachException($"'{host}' has no address: give the server's IP address");
            return new IPEndPoint(address, port);
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
            var (number, scale) = t.EndsWith("ms", StringComparison.Ordinal) ? (t[..^2], 0.001)
                : t.EndsWith('s') ? (t[..^1], 1.0)
                : t.EndsWith('m') ? (t[..^1], 60.0)
                : (t, 1.0);
            return double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && value > 0
                ? TimeSpan.FromSeconds(value * scale)
                : throw new UsageException($"option '{name}': '{text}' is not a duration (examples: 1s, 500ms, 2m)");
        }

        /// <summary>The size given with the option, or null when it is absent.</summary>
        public long? OptionalSize(string name)
        {
            var text = Value(name);
            if (text is null)
            {
                return null;
            }
            return NetSwap.Protocol.Swap.SwapExportName.TryParseSize(text.Trim(), out var bytes) && bytes > 0
                ? bytes
                : throw new UsageException($"option '{name}': '{text}' is not a size (examples: 512M, 1G)");
        }

        public long Size(string name, long fallback) => OptionalSize(name) ?? fallback;

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
