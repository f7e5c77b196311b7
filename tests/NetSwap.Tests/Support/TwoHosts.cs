using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace NetSwap.Tests.Support;

/// <summary>
/// Two hosts made by the test: network namespaces joined by a veth pair, an IPv4 and an IPv6 subnet between them, and
/// an extra client address (10.99.x.2, routed through the link) from outside the server's own subnets.
/// </summary>
public sealed partial class TwoHosts : IAsyncDisposable
{
    private readonly string _suffix = Random.Shared.Next(0x1000, 0xffff).ToString("x", System.Globalization.CultureInfo.InvariantCulture);

    public string Server => "nss" + _suffix;
    public string Client => "nsc" + _suffix;
    public string ClientLink => "vc" + _suffix;
    public string Subnet { get; } = $"10.250.{Random.Shared.Next(1, 250)}";
    public string ServerAddress => Subnet + ".1";
    public string ClientAddress => Subnet + ".2";
    public string ServerAddress6 => $"fd00:{_suffix}::1";
    public string ClientAddress6 => $"fd00:{_suffix}::2";
    /// <summary>A client address outside every subnet of the server.</summary>
    public string ForeignAddress => $"10.99.{Subnet.Split('.')[2]}.2";

    public async Task CreateAsync()
    {
        foreach (var command in new[]
        {
            $"netns add {Server}", $"netns add {Client}",
            $"link add vs{_suffix} netns {Server} type veth peer name {ClientLink} netns {Client}",
            $"-n {Server} addr add {Subnet}.1/24 dev vs{_suffix}", $"-n {Client} addr add {Subnet}.2/24 dev {ClientLink}",
            $"-n {Server} link set vs{_suffix} up", $"-n {Client} link set {ClientLink} up",
            $"-n {Server} link set lo up", $"-n {Client} link set lo up",
            $"-n {Server} addr add {ServerAddress6}/64 dev vs{_suffix} nodad", $"-n {Client} addr add {ClientAddress6}/64 dev {ClientLink} nodad",
            $"-n {Client} addr add {ForeignAddress}/32 dev {ClientLink}",
            $"-n {Server} route add {ForeignAddress}/32 via {ClientAddress}",
        })
        {
            var result = await ExternalTool.RunAsync("ip", command.Split(' '));
            Assert.True(result.ExitCode == 0, $"ip {command}: {result.All} (network namespaces need root)");
        }
    }

    /// <summary>
    /// A TCP socket made in the client's namespace, for this process to drive (a raw client behind a link the test can
    /// cut). A namespace is a property of the thread that makes the socket, so a thread of its own enters it and ends.
    /// </summary>
    public Socket ClientSocket(int receiveBuffer = 0)
    {
        Socket? socket = null;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle($"/var/run/netns/{Client}");
                if (SetNamespace(ns, CloneNewNet) != 0)
                {
                    throw new IOException($"setns {Client}: errno {Marshal.GetLastPInvokeError()}");
                }
                socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                if (receiveBuffer > 0)
                {
                    socket.ReceiveBufferSize = receiveBuffer;
                }
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        thread.Start();
        thread.Join();
        return error is null ? socket! : throw new InvalidOperationException("socket in the client namespace", error);
    }

    private const int CloneNewNet = 0x40000000;

    [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
    private static partial int SetNamespace(SafeFileHandle fd, int type);

    public async ValueTask DisposeAsync()
    {
        await ExternalTool.RunAsync("ip", ["netns", "del", Server]);
        await ExternalTool.RunAsync("ip", ["netns", "del", Client]);
    }
}
