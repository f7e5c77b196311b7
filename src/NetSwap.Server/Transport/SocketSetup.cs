using System.Net;
using System.Net.Sockets;

namespace NetSwap.Server.Transport;

internal static class SocketSetup
{
    private const int IpProtoTcp = 6;
    private const int TcpUserTimeout = 18;
    private const int SolSocket = 1;
    private const int SoReuseAddr = 2;

    /// <summary>NoDelay (replies are small and latency-bound), keepalive and TCP_USER_TIMEOUT on an accepted socket.</summary>
    public static void TuneAccepted(Socket socket, Hosting.TcpTuning tuning)
    {
        if (socket.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6))
        {
            return;
        }
        socket.NoDelay = true;
        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, Math.Max(1, (int)tuning.KeepAliveTime.TotalSeconds));
        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, Math.Max(1, (int)tuning.KeepAliveInterval.TotalSeconds));
        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, Math.Max(1, tuning.KeepAliveCount));
        SetInt(socket, IpProtoTcp, TcpUserTimeout, (int)tuning.UserTimeout.TotalMilliseconds);
    }

    private static void SetInt(Socket socket, int level, int name, int value)
    {
        Span<byte> bytes = stackalloc byte[4];
        BitConverter.TryWriteBytes(bytes, value);
        socket.SetRawSocketOption(level, name, bytes);
    }

    /// <summary>A listening socket; IPv6 sockets are v6-only so that 0.0.0.0 and [::] can share a port.</summary>
    public static Socket Listen(IPEndPoint endpoint, int backlog = 512)
    {
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (endpoint.AddressFamily == AddressFamily.InterNetworkV6)
            {
                socket.DualMode = false;
            }
            // SO_REUSEADDR alone (a restart binds at once past TIME_WAIT). .NET's ReuseAddress sets SO_REUSEPORT too on
            // Linux, which let a second netswapd bind the same port and silently take half the connections.
            SetInt(socket, SolSocket, SoReuseAddr, 1);
            socket.Bind(endpoint);
            socket.Listen(backlog);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>The client's address as administrators read it: IPv4-mapped IPv6 shown as IPv4.</summary>
    public static string Describe(EndPoint? endpoint) => endpoint switch
    {
        IPEndPoint { Address.IsIPv4MappedToIPv6: true } ip => new IPEndPoint(ip.Address.MapToIPv4(), ip.Port).ToString(),
        IPEndPoint ip => ip.ToString(),
        UnixDomainSocketEndPoint unix => "unix:" + unix,
        null => "unknown",
        _ => endpoint.ToString() ?? "unknown",
    };

    /// <summary>Resets, aborts and closes are how clients leave; they are not failures.</summary>
    public static bool IsConnectionReset(SocketError error) => error is SocketError.ConnectionReset or SocketError.ConnectionAborted
        or SocketError.Shutdown or SocketError.OperationAborted or SocketError.Interrupted or SocketError.TimedOut
        or SocketError.NetworkReset or SocketError.HostUnreachable or SocketError.NetworkUnreachable;
}
