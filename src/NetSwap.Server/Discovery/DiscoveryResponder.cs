using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using NetSwap.Protocol.Discovery;
using NetSwap.Server.Access;
using NetSwap.Server.Hosting;

namespace NetSwap.Server.Discovery;

/// <summary>
/// Answers discovery probes on UDP (IPv4 broadcast and the IPv6 multicast group on every interface). A reply goes only
/// to a client the access rules admit, over an address family an NBD listener takes; it is never larger than the probe
/// that asked (probes are padded: no amplification), and each source address gets at most a few replies a second.
/// Anything that is not exactly a probe gets nothing.
/// </summary>
internal sealed partial class DiscoveryResponder : IAsyncDisposable
{
    private readonly NbdServerContext _context;
    private readonly Func<IPAddress, DiscoveryProbe, DiscoveryReply?> _answer;
    private readonly List<Socket> _sockets = [];
    private readonly List<Task> _loops = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _lock = new();
    // Per-source reply budget; forgotten when full again so a spoofed flood of sources stays bounded.
    private readonly Dictionary<IPAddress, TokenBucket> _perSource = [];
    private long _ignored;

    private DiscoveryResponder(NbdServerContext context, Func<IPAddress, DiscoveryProbe, DiscoveryReply?> answer)
    {
        _context = context;
        _answer = answer;
    }

    public long Ignored => Interlocked.Read(ref _ignored);
    public IReadOnlyList<Socket> Sockets => _sockets;

    /// <summary>Listens on the given endpoints (default: 0.0.0.0 and [::] on the discovery port).</summary>
    public static DiscoveryResponder Start(NbdServerContext context, IEnumerable<IPEndPoint> endpoints, Func<IPAddress, DiscoveryProbe, DiscoveryReply?> answer)
    {
        var sockets = new List<Socket>();
        try
        {
            foreach (var endpoint in endpoints)
            {
                var socket = new Socket(endpoint.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
                sockets.Add(socket);
                if (endpoint.AddressFamily == AddressFamily.InterNetworkV6)
                {
                    socket.DualMode = false;
                }
                // No SO_REUSEADDR (nor .NET's ReuseAddress, which adds SO_REUSEPORT): with it any local user could bind
                // the same port and take unicast probes meant for this server.
                socket.Bind(endpoint);
            }
        }
        catch
        {
            foreach (var socket in sockets)
            {
                socket.Dispose();
            }
            throw;
        }
        return Serve(context, sockets, answer);
    }

    /// <summary>
    /// Answers on UDP sockets bound already: those systemd passes from a socket unit's ListenDatagram= (a probe that
    /// arrives while netswapd is not running starts it, and waits in the socket for its answer). A socket bound to
    /// the IPv6 wildcard joins the multicast group on every interface, as one bound here does.
    /// </summary>
    public static DiscoveryResponder Serve(NbdServerContext context, IReadOnlyList<Socket> sockets, Func<IPAddress, DiscoveryProbe, DiscoveryReply?> answer)
    {
        var responder = new DiscoveryResponder(context, answer);
        foreach (var socket in sockets)
        {
            var local = (IPEndPoint)socket.LocalEndPoint!;
            if (local.AddressFamily == AddressFamily.InterNetworkV6 && local.Address.Equals(IPAddress.IPv6Any))
            {
                JoinMulticastGroup(socket);
            }
            responder._sockets.Add(socket);
            DiscoveryLog.Listening(context.Logger, local.ToString());
            responder._loops.Add(Task.Run(() => responder.ReceiveLoopAsync(socket)));
        }
        return responder;
    }

    private static void JoinMulticastGroup(Socket socket)
    {
        var group = IPAddress.Parse(DiscoveryProtocol.MulticastGroup);
        foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
        {
            if (!nic.SupportsMulticast || nic.OperationalStatus == OperationalStatus.Down || !nic.Supports(NetworkInterfaceComponent.IPv6))
            {
                continue;
            }
            try
            {
                socket.SetSocketOption(SocketOptionLevel.IPv6, SocketOptionName.AddMembership, new IPv6MulticastOption(group, nic.GetIPProperties().GetIPv6Properties().Index));
            }
            catch (Exception e) when (e is SocketException or NetworkInformationException)
            {
                // An interface without IPv6 in use: nothing to join there.
            }
        }
    }

    private async Task ReceiveLoopAsync(Socket socket)
    {
        var buffer = new byte[2048];
        var reply = new byte[DiscoveryProtocol.ProbeSize];
        EndPoint any = socket.AddressFamily == AddressFamily.InterNetwork ? new IPEndPoint(IPAddress.Any, 0) : new IPEndPoint(IPAddress.IPv6Any, 0);
        while (!_stop.IsCancellationRequested)
        {
            SocketReceiveFromResult received;
            try
            {
                received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, any, _stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }
            var source = (IPEndPoint)received.RemoteEndPoint;
            // A dual-stack socket (systemd's ListenDatagram= with BindIPv6Only=both) sees IPv4 clients as ::ffff:a.b.c.d.
            var client = AddressRuleSet.Normalize(source.Address);
            if (!DiscoveryProbe.TryRead(buffer.AsSpan(0, received.ReceivedBytes), out var probe)
                || _context.Gate.AdmitClient(client) is not null
                || !TakeReplyToken(client))
            {
                Interlocked.Increment(ref _ignored);
                continue;
            }
            // None: nothing here takes NBD connections over the family the client asked on.
            if (_answer(client, probe) is not { } answer || answer.Size > received.ReceivedBytes)
            {
                Interlocked.Increment(ref _ignored);
                continue;
            }
            var length = answer.Write(reply);
            try
            {
                await socket.SendToAsync(reply.AsMemory(0, length), SocketFlags.None, source, _stop.Token);
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
            {
            }
        }
    }

    /// <summary>At most 5 replies a second (burst 10) to one address.</summary>
    private bool TakeReplyToken(IPAddress address)
    {
        address = AddressRuleSet.Normalize(address);
        lock (_lock)
        {
            if (!_perSource.TryGetValue(address, out var bucket))
            {
                if (_perSource.Count > 4096)
                {
                    foreach (var (key, value) in _perSource.ToList())
                    {
                        if (value.IsFull)
                        {
                            _perSource.Remove(key);
                        }
                    }
                }
                bucket = new TokenBucket(5, 10);
                _perSource[address] = bucket;
            }
            return bucket.TryTake();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        foreach (var socket in _sockets)
        {
            socket.Dispose();
        }
        await Task.WhenAll(_loops);
        _stop.Dispose();
    }

    private static partial class DiscoveryLog
    {
        [LoggerMessage(500, LogLevel.Information, "discovery: answering probes on {Endpoint} (udp)")]
        public static partial void Listening(ILogger logger, string endpoint);
    }
}
