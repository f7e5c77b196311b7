using System.Net;
using NetSwap.Server.Access;

namespace NetSwap.Tests.Access;

/// <summary>Longest prefix decides, deny wins a tie, nothing matching is denied, IPv4-mapped is IPv4.</summary>
public class AddressRuleTests
{
    private static AddressRuleSet Rules(params string[] rules) => new(rules.Select(r =>
    {
        var parts = r.Split(' ');
        return new AddressRule(IPNetwork.Parse(parts[1].Contains('/', StringComparison.Ordinal) ? parts[1] : parts[1] + (parts[1].Contains(':', StringComparison.Ordinal) ? "/128" : "/32")),
            parts[0] == "allow" ? RuleAction.Allow : RuleAction.Deny, "test");
    }));

    [Theory]
    [InlineData("10.0.5.8", true)]
    [InlineData("10.0.5.7", false)]
    [InlineData("10.0.6.1", false)]
    [InlineData("::ffff:10.0.5.8", true)]
    [InlineData("::ffff:10.0.5.7", false)]
    public void AllowALab_ExceptOneHost(string address, bool allowed) =>
        Assert.Equal(allowed, Rules("allow 10.0.5.0/24", "deny 10.0.5.7").Decide(IPAddress.Parse(address)).Allowed);

    [Theory]
    [InlineData("10.0.5.200", true)]
    [InlineData("10.1.2.3", false)]
    [InlineData("192.168.1.1", false)]
    public void DenyTheNetwork_ButOneLab(string address, bool allowed) =>
        Assert.Equal(allowed, Rules("deny 10.0.0.0/8", "allow 10.0.5.0/24").Decide(IPAddress.Parse(address)).Allowed);

    [Fact]
    public void OnATie_DenyWins_InEitherOrder()
    {
        Assert.False(Rules("allow 10.0.0.0/16", "deny 10.0.0.0/16").Decide(IPAddress.Parse("10.0.1.1")).Allowed);
        Assert.False(Rules("deny 10.0.0.0/16", "allow 10.0.0.0/16").Decide(IPAddress.Parse("10.0.1.1")).Allowed);
    }

    [Theory]
    [InlineData("fd00:1::5", true)]
    [InlineData("fd00:1::bad", false)]
    [InlineData("fd00:2::1", false)]
    [InlineData("10.0.0.1", false)]
    public void IPv6_RulesMatchIPv6Only(string address, bool allowed) =>
        Assert.Equal(allowed, Rules("allow fd00:1::/64", "deny fd00:1::bad", "allow ::ffff:0:0/96").Decide(IPAddress.Parse(address)).Allowed);

    [Fact]
    public void NothingMatching_IsDenied_AndTheDecidingRuleIsNamed()
    {
        var rules = Rules("allow 10.0.5.0/24", "deny 10.0.5.7");
        Assert.Equal((false, null), rules.Decide(IPAddress.Parse("172.16.0.1")));
        Assert.Equal("10.0.5.7/32", rules.Decide(IPAddress.Parse("10.0.5.7")).Rule!.Network.ToString());
    }

    [Fact]
    public void EmbeddedDefaults_AdmitLoopbackAndLocalSubnets_Only()
    {
        var rules = new AddressRuleSet(AddressRuleSet.LocalDefaults());
        Assert.True(rules.Decide(IPAddress.Parse("127.0.0.1")).Allowed);
        Assert.True(rules.Decide(IPAddress.Parse("127.200.1.1")).Allowed);
        Assert.True(rules.Decide(IPAddress.IPv6Loopback).Allowed);
        Assert.False(rules.Decide(IPAddress.Parse("203.0.113.9")).Allowed);   // documentation range: never local
        Assert.False(rules.Decide(IPAddress.Parse("2001:db8::1")).Allowed);
    }

    [Fact]
    public void ClientListFile_ParsesAddressesSubnetsAndMacs_AndNamesBadLines()
    {
        var (networks, macs) = ClientList.Parse("/etc/netswap/clients", "# lab\n10.0.5.7\n10.0.6.0/24  # second lab\nfd00::7\n52:54:00:12:34:56\n\n");
        Assert.Equal(["10.0.5.7/32", "10.0.6.0/24", "fd00::7/128"], networks.Select(n => n.ToString()));
        Assert.Single(macs);
        var e = Assert.Throws<FormatException>(() => ClientList.Parse("/etc/netswap/clients", "10.0.5.7\nnot-an-address\n"));
        Assert.Contains("/etc/netswap/clients:2", e.Message);
    }

    [Fact]
    public async Task TokenBucket_Waits_ForDebt_AtTheConfiguredRate()
    {
        var bucket = new TokenBucket(1_000_000, 100_000);
        var started = System.Diagnostics.Stopwatch.StartNew();
        for (var i = 0; i < 10; i++)
        {
            await bucket.WaitAsync(100_000, CancellationToken.None);
        }
        // 1,000,000 bytes at 1 MB/s with 100 KB saved up: at least 0.9 s, whatever the machine.
        Assert.True(started.Elapsed >= TimeSpan.FromSeconds(0.85), started.Elapsed.ToString());
        Assert.True(new TokenBucket(10, 3).TryTake() && !new TokenBucket(10, 0).TryTake());
    }
}
