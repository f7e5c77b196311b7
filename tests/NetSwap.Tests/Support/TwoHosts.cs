namespace NetSwap.Tests.Support;

/// <summary>
/// Two hosts made by the test: network namespaces joined by a veth pair, an IPv4 and an IPv6 subnet between them, and
/// an extra client address (10.99.x.2, routed through the link) from outside the server's own subnets.
/// </summary>
public sealed class TwoHosts : IAsyncDisposable
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

    public async ValueTask DisposeAsync()
    {
        await ExternalTool.RunAsync("ip", ["netns", "del", Server]);
        await ExternalTool.RunAsync("ip", ["netns", "del", Client]);
    }
}
