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
        // On a tie of prefix length, deny comes first.
        var best = MostSpecific(_rules, r => r.Network, address, r => r.Action == RuleAction.Deny);
        return (best?.Action == RuleAction.Allow, best);
    }

    /// <summary>
    /// The item whose network contains the address with the longest prefix (IPv4-mapped addresses matched as IPv4);
    /// among equally long ones the first that <paramref name="preferOnTie"/> picks, else the first. Null: none contains it.
    /// The one matching rule of NetSwap: access rules and per-subnet swap sizes both use it.
    /// </summary>
    public static T? MostSpecific<T>(IEnumerable<T> items, Func<T, IPNetwork> network, IPAddress address, Func<T, bool>? preferOnTie = null)
        where T : class
    {
        address = Normalize(address);
        T? best = null;
        var bestPrefix = -1;
        foreach (var item in items)
        {
            var candidate = network(item);
            if (candidate.BaseAddress.AddressFamily != address.AddressFamily || !candidate.Contains(address))
            {
                continue;
            }
            if (candidate.PrefixLength > bestPrefix || (candidate.PrefixLength == bestPrefix && preferOnTie?.Invoke(item) == true))
            {
                best = item;
                bestPrefix = candidate.PrefixLength;
            }
        }
        return best;
    }

    /// <summary>A single address as a network: /32 or /128.</summary>
    public static IPNetwork HostNetwork(IPAddress address)
    {
        address = Normalize(address);
        return new IPNetwork(address, address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128);
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
