using System.Globalization;
using System.Net;

namespace NetSwap.Client.Commands;

internal static class ServerAddress
{
    public const int DefaultPort = 9572;

    /// <summary>
    /// SERVER[:PORT]: an IP address, or a host name resolved by the system's resolver (the first address it gives).
    /// A malformed one is a usage error; a name that does not resolve fails the command (exit 1).
    /// </summary>
    public static IPEndPoint Parse(string text, int defaultPort = DefaultPort)
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

    public const string Note = "SERVER is an IP address (IPv4, or IPv6 in brackets when a port follows) or a host name, resolved where a resolver exists (/etc/hosts, DNS; an initramfs usually has neither: give an address there). The default port is 9572.";
}
