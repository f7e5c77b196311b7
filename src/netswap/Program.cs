using System.Globalization;
using System.Net;
using NetSwap.Client;
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
}
