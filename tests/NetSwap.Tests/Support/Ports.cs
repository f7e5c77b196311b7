using System.Net;
using System.Net.Sockets;

namespace NetSwap.Tests.Support;

/// <summary>
/// Ports for tests that must name a port before something listens on it. They come from below the ephemeral range
/// (32768 and up on Linux): a port picked from that range and let go can be taken at once as the source port of an
/// outgoing connection of a test running alongside, and the listen that follows fails with "address in use".
/// </summary>
public static class Ports
{
    private const int First = 20000;
    private const int End = 32000;

    /// <summary>A loopback port nothing is bound to right now.</summary>
    public static int Unused()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        return BindBelowEphemeralRange(endpoint =>
        {
            probe.Bind(endpoint);
            return endpoint.Port;
        });
    }

    /// <summary>Runs <paramref name="bind"/> on loopback ports below the ephemeral range until one is free.</summary>
    public static T BindBelowEphemeralRange<T>(Func<IPEndPoint, T> bind)
    {
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                return bind(new IPEndPoint(IPAddress.Loopback, Random.Shared.Next(First, End)));
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse && attempt < 100)
            {
            }
        }
    }
}
