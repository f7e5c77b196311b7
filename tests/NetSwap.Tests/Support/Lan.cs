using System.Globalization;

namespace NetSwap.Tests.Support;

/// <summary>
/// A small LAN made by the test: a "switch" network namespace holding a bridge, and hosts (namespaces) plugged into it
/// with an IPv4 address in 10.253.N.0/24 and an IPv6 address in fd53:N::/64. Broadcast and multicast cross it.
/// </summary>
public sealed class Lan : IAsyncDisposable
{
    private readonly string _id = Random.Shared.Next(0x100, 0xfff).ToString("x", CultureInfo.InvariantCulture);
    private readonly List<string> _namespaces = [];
    private readonly int _subnet = Random.Shared.Next(1, 250);

    public string Switch => "lsw" + _id;

    public string Namespace(string host) => $"l{_id}{host}";
    public string Address(int host) => $"10.253.{_subnet}.{host}";
    public string Address6(int host) => $"fd53:{_subnet:x}::{host:x}";

    public async Task CreateAsync(params (string Name, int Host)[] hosts)
    {
        await IpAsync($"netns add {Switch}");
        _namespaces.Add(Switch);
        await IpAsync($"-n {Switch} link add br0 type bridge");
        await IpAsync($"-n {Switch} link set br0 up");
        foreach (var (name, host) in hosts)
        {
            var ns = Namespace(name);
            await IpAsync($"netns add {ns}");
            _namespaces.Add(ns);
            await IpAsync($"link add e{_id}{name} netns {ns} type veth peer name p{_id}{name} netns {Switch}");
            await IpAsync($"-n {Switch} link set p{_id}{name} master br0");
            await IpAsync($"-n {Switch} link set p{_id}{name} up");
            await IpAsync($"-n {ns} link set lo up");
            await IpAsync($"-n {ns} addr add {Address(host)}/24 brd + dev e{_id}{name}");
            await IpAsync($"-n {ns} addr add {Address6(host)}/64 dev e{_id}{name} nodad");
            await IpAsync($"-n {ns} link set e{_id}{name} up");
        }
    }

    /// <summary>
    /// Every IPv6 address a host has now: its ULA and its link-local address (once that has passed duplicate address
    /// detection, the kernel prefers it for replies to link-local senders, such as a probe to the ff02:: group).
    /// </summary>
    public async Task<List<string>> Addresses6Async(string host)
    {
        var result = await ExternalTool.RunAsync("ip", ["-n", Namespace(host), "-6", "-o", "addr", "show"]);
        Assert.True(result.ExitCode == 0, result.All);
        return [.. result.Stdout.Split('\n')
            .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Select(words => Array.IndexOf(words, "inet6") is var i and >= 0 && i + 1 < words.Length ? words[i + 1].Split('/')[0] : null)
            .OfType<string>()];
    }

    private static async Task IpAsync(string command)
    {
        var result = await ExternalTool.RunAsync("ip", command.Split(' '));
        Assert.True(result.ExitCode == 0, $"ip {command}: {result.All} (network namespaces need root)");
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var ns in _namespaces)
        {
            await ExternalTool.RunAsync("ip", ["netns", "del", ns]);
        }
    }
}
