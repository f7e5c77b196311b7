using System.Net;
using System.Net.Sockets;
using NetSwap.Protocol.Discovery;

namespace NetSwap.Tests.Support;

/// <summary>One discovery probe from 127.0.0.1 to a port on 127.0.0.1, as a client sends it, and its answer.</summary>
public static class DiscoveryProbes
{
    /// <summary>The reply to a proper probe, or null when none came within <paramref name="wait"/> or it did not parse.</summary>
    public static async Task<DiscoveryReply?> AskAsync(int port, uint id, TimeSpan wait)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var probe = new byte[DiscoveryProtocol.ProbeSize];
        new DiscoveryProbe(id, 0, "pc-01").Write(probe);
        await socket.SendToAsync(probe, new IPEndPoint(IPAddress.Loopback, port));
        var buffer = new byte[2048];
        using var timeout = new CancellationTokenSource(wait);
        try
        {
            var received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), timeout.Token);
            return DiscoveryReply.TryRead(buffer.AsSpan(0, received.ReceivedBytes), out var reply) ? reply : null;
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }
}
