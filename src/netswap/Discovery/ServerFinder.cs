using System.Diagnostics;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using NetSwap.Protocol.Discovery;

namespace NetSwap.Client.Discovery;

/// <summary>A server that answered, and how fast.</summary>
internal sealed record FoundServer(IPAddress Address, DiscoveryReply Reply, TimeSpan RoundTrip)
{
    public IPEndPoint NbdEndpoint => new(Address, Reply.NbdPort);
    public bool Admits => (Reply.Flags & DiscoveryReplyFlags.SwapAvailable) != 0;
}

/// <summary>
/// Finds swap servers with no address to type: a padded probe to the broadcast address of every IPv4 interface (and
/// 255.255.255.255) and to the IPv6 multicast group on every interface, then the replies that arrive in time.
/// Works with IP literals only: a static binary in a bare initramfs resolves no names.
/// </summary>
internal static class ServerFinder
{
    public static async Task<List<FoundServer>> DiscoverAsync(TimeSpan timeout, ulong wantedSize, string token, int port,
        IReadOnlyList<IPEndPoint>? unicastTargets = null, CancellationToken cancellationToken = default)
    {
        var probeId = (uint)Random.Shared.Next();
        var probe = new byte[DiscoveryProtocol.ProbeSize];
        new DiscoveryProbe(probeId, wantedSize, token).Write(probe);
        var found = new Dictionary<IPAddress, FoundServer>();
        var sent = Stopwatch.StartNew();
        using var v4 = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { EnableBroadcast = true };
        v4.Bind(new IPEndPoint(IPAddress.Any, 0));
        Socket? v6 = null;
        try
        {
            v6 = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp) { DualMode = false };
            v6.Bind(new IPEndPoint(IPAddress.IPv6Any, 0));
        }
        catch (SocketException)
        {
            v6?.Dispose();
            v6 = null;
        }
        try
        {
            var targets = (unicastTargets ?? Targets(port)).ToList();
            await SendProbesAsync(probe, targets, v4, v6, cancellationToken);
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(timeout);
            var receivers = new List<Task>
            {
                ReceiveAsync(v4, probeId, sent, found, deadline.Token),
            };
            if (v6 is not null)
            {
                receivers.Add(ReceiveAsync(v6, probeId, sent, found, deadline.Token));
            }
            // UDP gets lost (a link still coming up, a busy switch): probe again at a third and two thirds of the wait
            // while nobody has answered.
            for (var round = 1; round < 3; round++)
            {
                await Task.WhenAny(Task.WhenAll(receivers), Task.Delay(timeout / 3, cancellationToken));
                bool anyone;
                lock (found)
                {
                    anyone = found.Count > 0;
                }
                if (deadline.IsCancellationRequested || anyone)
                {
                    break;
                }
                await SendProbesAsync(probe, targets, v4, v6, cancellationToken);
            }
            await Task.WhenAll(receivers);
        }
        finally
        {
            v6?.Dispose();
        }
        lock (found)
        {
            return Rank(found.Values, wantedSize);
        }
    }

    private static async Task SendProbesAsync(byte[] probe, List<IPEndPoint> targets, Socket v4, Socket? v6, CancellationToken cancellationToken)
    {
        foreach (var target in targets)
        {
            var socket = target.AddressFamily == AddressFamily.InterNetwork ? v4 : v6;
            if (socket is null)
            {
                continue;
            }
            try
            {
                if (target.Address.IsIPv6Multicast)
                {
                    socket.SetSocketOption(SocketOptionLevel.IPv6, SocketOptionName.MulticastInterface, (int)target.Address.ScopeId);
                }
                await socket.SendToAsync(probe, SocketFlags.None, target, cancellationToken);
            }
            catch (SocketException)
            {
                // No route there (an interface without a default route, 255.255.255.255 on some hosts): try the others.
            }
        }
    }

    private static async Task ReceiveAsync(Socket socket, uint probeId, Stopwatch sent, Dictionary<IPAddress, FoundServer> found, CancellationToken cancellationToken)
    {
        var buffer = new byte[DiscoveryProtocol.ProbeSize];
        EndPoint any = socket.AddressFamily == AddressFamily.InterNetwork ? new IPEndPoint(IPAddress.Any, 0) : new IPEndPoint(IPAddress.IPv6Any, 0);
        while (true)
        {
            SocketReceiveFromResult received;
            try
            {
                received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, any, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }
            if (!DiscoveryReply.TryRead(buffer.AsSpan(0, received.ReceivedBytes), out var reply) || reply.ProbeId != probeId)
            {
                continue;
            }
            var address = ((IPEndPoint)received.RemoteEndPoint).Address;
            lock (found)
            {
                found.TryAdd(address, new FoundServer(address, reply, sent.Elapsed));
            }
        }
    }

    /// <summary>Best first: admits us, has room for the size we want, then the most free capacity, then the fastest.</summary>
    public static List<FoundServer> Rank(IEnumerable<FoundServer> servers, ulong wantedSize) =>
        [.. servers
            .OrderByDescending(s => s.Admits)
            .ThenByDescending(s => s.Reply.FreeCapacity >= wantedSize)
            .ThenByDescending(s => s.Reply.FreeCapacity)
            .ThenBy(s => s.RoundTrip)];

    /// <summary>Every IPv4 broadcast address, 255.255.255.255, and the multicast group on every IPv6 interface.</summary>
    private static IEnumerable<IPEndPoint> Targets(int port)
    {
        var targets = new List<IPEndPoint>();
        foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
        {
            if (nic.OperationalStatus == OperationalStatus.Down || nic.NetworkInterfaceType == NetworkInterfaceType.Loopback)
            {
                continue;
            }
            var properties = nic.GetIPProperties();
            foreach (var unicast in properties.UnicastAddresses)
            {
                if (unicast.Address.AddressFamily == AddressFamily.InterNetwork && unicast.PrefixLength is > 0 and < 32)
                {
                    var address = BitConverter.ToUInt32(unicast.Address.GetAddressBytes());
                    var mask = (uint)IPAddress.HostToNetworkOrder(unchecked((int)(uint.MaxValue << (32 - unicast.PrefixLength))));
                    targets.Add(new IPEndPoint(new IPAddress(BitConverter.GetBytes(address | ~mask)), port));
                }
            }
            if (nic.SupportsMulticast && nic.Supports(NetworkInterfaceComponent.IPv6))
            {
                try
                {
                    var group = IPAddress.Parse(DiscoveryProtocol.MulticastGroup);
                    targets.Add(new IPEndPoint(new IPAddress(group.GetAddressBytes(), properties.GetIPv6Properties().Index), port));
                }
                catch (NetworkInformationException)
                {
                }
            }
        }
        targets.Add(new IPEndPoint(IPAddress.Broadcast, port));
        return targets.DistinctBy(t => t.ToString());
    }
}
