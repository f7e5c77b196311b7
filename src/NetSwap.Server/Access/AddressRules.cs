using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;

namespace NetSwap.Server.Access;

internal enum RuleAction
{
    Allow,
    Deny,
}

/// <summary>One allow or deny rule; <see cref="Origin"/> says where it came from, for the log.</summary>
internal sealed record AddressRule(IPNetwork Network, RuleAction Action, string Origin)
{
    public override string ToString() => $"{Action.ToString().ToLowerInvariant()} {Network} ({Origin})";
}

/// <summary>
/// Allow and deny rules over addresses and subnets, IPv4 and IPv6. The most specific matching rule decides (longest
/// prefix); between equally specific rules deny wins; an address no rule matches is denied. IPv4-mapped IPv6
/// addresses (::ffff:10.0.5.7) are matched as the IPv4 address they are.
/// </summary>
internal sealed class AddressRuleSet
{
    private readonly AddressRule[] _rules;

    public AddressRuleSet(IEnumerable<AddressRule> rules) => _rules = [.. rules];

    public IReadOnlyList<AddressRule> Rules => _rules;

    public static IPAddress Normalize(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;

    public (bool Allowed, AddressRule? Rule) Decide(IPAddress address)
    {
        address = Normalize(address);
        AddressRule? best = null;
        foreach (var rule in _rules)
        {
            if (rule.Network.BaseAddress.AddressFamily != address.AddressFamily || !rule.Network.Contains(address))
            {
                continue;
            }
            if (best is null || rule.Network.PrefixLength > best.Network.PrefixLength
                || (rule.Network.PrefixLength == best.Network.PrefixLength && rule.Action == RuleAction.Deny))
            {
                best = rule;
            }
        }
        return (best?.Action == RuleAction.Allow, best);
    }

    /// <summary>
    /// The embedded default: loopback and the subnets of this host's own interfaces; everything else is denied.
    /// Safe on a school LAN: the lab the server sits in can swap, the internet cannot.
    /// </summary>
    public static List<AddressRule> LocalDefaults()
    {
        var rules = new List<AddressRule>
        {
            new(IPNetwork.Parse("127.0.0.0/8"), RuleAction.Allow, "default: loopback"),
            new(IPNetwork.Parse("::1/128"), RuleAction.Allow, "default: loopback"),
        };
        foreach (var network in LocalSubnets())
        {
            if (!rules.Any(r => r.Network.Equals(network)))
            {
                rules.Add(new AddressRule(network, RuleAction.Allow, "default: local interface"));
            }
        }
        return rules;
    }

    private static IEnumerable<IPNetwork> LocalSubnets()
    {
        NetworkInterface[] interfaces;
        try
        {
            interfaces = NetworkInterface.GetAllNetworkInterfaces();
        }
        catch (NetworkInformationException)
        {
            yield break;
        }
        foreach (var nic in interfaces)
        {
            if (nic.NetworkInterfaceType == NetworkInterfaceType.Loopback)
            {
                continue;
            }
            foreach (var unicast in nic.GetIPProperties().UnicastAddresses)
            {
                var address = unicast.Address;
                if (address.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6) || unicast.PrefixLength <= 0)
                {
                    continue;
                }
                yield return new IPNetwork(Mask(address, unicast.PrefixLength), unicast.PrefixLength);
            }
        }
    }

    private static IPAddress Mask(IPAddress address, int prefix)
    {
        var bytes = address.GetAddressBytes();
        for (var i = 0; i < bytes.Length; i++)
        {
            var keep = Math.Clamp(prefix - (i * 8), 0, 8);
            bytes[i] &= (byte)(0xff << (8 - keep));
        }
        return new IPAddress(bytes);
    }
}
