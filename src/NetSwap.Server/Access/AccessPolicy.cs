using System.Net;

namespace NetSwap.Server.Access;

/// <summary>Limits on how much clients may take. 0 means no limit. Every value is logged at start and on reload.</summary>
internal sealed record AccessLimits
{
    /// <summary>Connections at once, all clients together.</summary>
    public int MaxClients { get; init; } = 1024;
    /// <summary>Connections at once from one address.</summary>
    public int MaxClientsPerAddress { get; init; } = 16;
    /// <summary>Clients in the transmission phase of one export at once ("swap" counts every swap area).</summary>
    public int MaxClientsPerExport { get; init; }
    /// <summary>New connections per second from one address (token bucket); excess connections are closed at once.</summary>
    public double ConnectionRate { get; init; } = 20;
    public int ConnectionBurst { get; init; } = 40;
    /// <summary>Payload bytes per second for one client and for all together; I/O waits rather than fails.</summary>
    public long BandwidthPerClient { get; init; }
    public long BandwidthTotal { get; init; }
}

/// <summary>
/// Who may connect and to what: an immutable snapshot, replaced whole on SIGHUP so a connection never sees half a
/// reload. Global rules admit a client to the server; an export's own rules (when it has any) then decide for it.
/// </summary>
internal sealed class AccessPolicy
{
    public AccessPolicy(AddressRuleSet global, IReadOnlyDictionary<string, AddressRuleSet> perExport, ClientList? clients, AccessLimits limits)
    {
        Global = global;
        PerExport = perExport;
        Clients = clients;
        Limits = limits;
    }

    /// <summary>Everyone may connect, without limits: what a server built without a policy (tests, embedding) uses.</summary>
    public static AccessPolicy AllowAll { get; } = new(
        new AddressRuleSet([new AddressRule(IPNetwork.Parse("0.0.0.0/0"), RuleAction.Allow, "allow all"), new AddressRule(IPNetwork.Parse("::/0"), RuleAction.Allow, "allow all")]),
        new Dictionary<string, AddressRuleSet>(), null, new AccessLimits { MaxClients = 0, MaxClientsPerAddress = 0, ConnectionRate = 0 });

    public AddressRuleSet Global { get; }
    public IReadOnlyDictionary<string, AddressRuleSet> PerExport { get; }
    public ClientList? Clients { get; }
    public AccessLimits Limits { get; }

    /// <summary>May this address use the server at all? Null when yes; otherwise the reason, for the log.</summary>
    public string? CheckClient(IPAddress? address)
    {
        if (address is null)
        {
            // Not an IP transport (in-memory tests): nothing to match.
            return null;
        }
        var (allowed, rule) = Global.Decide(address);
        if (!allowed)
        {
            return rule is null ? "no allow rule matches" : $"denied by rule {rule}";
        }
        if (Clients is not null && !Clients.Contains(address, out _))
        {
            return $"not on the client list {Clients.Path}";
        }
        return null;
    }

    /// <summary>May this address use this export? Null when yes (or the export has no rules of its own).</summary>
    public string? CheckExport(string export, IPAddress? address)
    {
        if (address is null || !PerExport.TryGetValue(export, out var rules))
        {
            return null;
        }
        var (allowed, rule) = rules.Decide(address);
        return allowed ? null : rule is null ? $"no allow rule of export '{export}' matches" : $"denied by rule {rule} of export '{export}'";
    }
}
