using System.Collections.Concurrent;
using System.Net;
using NetSwap.Protocol.Nbd;
using NetSwap.Protocol.Swap;
using NetSwap.Server.Tls;

namespace NetSwap.Server.Access;

/// <summary>An export refused to a client: the error and message the client gets, and the rule that refused, for the log.</summary>
internal readonly record struct ExportRefusal(NbdOptionReplyType Error, string Message, string? DeniedBy);

/// <summary>
/// Every rule that decides whether a client is let in, and to what, in one place for the handshake and for discovery:
/// the connection limits (at accept), the address rules and the client list (the server as a whole), the TLS-only rules,
/// each export's own address rules, and max-clients-per-export. Rules and TLS are one snapshot replaced whole on SIGHUP
/// (<see cref="Replace"/>), so a decision never sees half a reload. A swap token's owner is checked by the swap registry, under the lock that creates
/// and destroys the areas the tokens name.
/// </summary>
internal sealed class AdmissionGate
{
    // The address rules, limits and TLS rules in force, as one snapshot: a reload replaces both at once, and each
    // decision reads the snapshot once.
    private sealed record Rules(AccessPolicy Policy, TlsConfiguration Tls);

    private volatile Rules _rules;
    private readonly ConcurrentDictionary<string, int> _clientsPerExport = new(StringComparer.Ordinal);

    public AdmissionGate(AccessPolicy policy)
    {
        _rules = new Rules(policy, TlsConfiguration.Disabled);
        Connections = new ConnectionLimiter(policy.Limits);
    }

    /// <summary>The access rules and limits in force.</summary>
    public AccessPolicy Policy
    {
        get => _rules.Policy;
        set => Replace(value, _rules.Tls);
    }

    /// <summary>TLS credentials and rules in force.</summary>
    public TlsConfiguration Tls
    {
        get => _rules.Tls;
        set => Replace(_rules.Policy, value);
    }

    /// <summary>SIGHUP: the new access rules, limits and TLS rules, in force together from the next decision on.</summary>
    public void Replace(AccessPolicy policy, TlsConfiguration tls)
    {
        _rules = new Rules(policy, tls);
        Connections.Update(policy.Limits);
    }

    /// <summary>Connections at once and per second, counted at accept before a byte is read.</summary>
    public ConnectionLimiter Connections { get; }

    /// <summary>May this address use the server at all (handshake and discovery)? Null when yes; otherwise why not, for the log.</summary>
    public string? AdmitClient(IPAddress? address) => _rules.Policy.CheckClient(address);

    /// <summary>Whether the server offers STARTTLS.</summary>
    public bool OffersTls => _rules.Tls.Mode != TlsMode.Off;

    /// <summary>Whether a client must establish TLS before it may negotiate anything (FORCEDTLS).</summary>
    public bool RequiresTls => _rules.Tls.Mode == TlsMode.Require;

    /// <summary>
    /// Whether swap is closed to a client without TLS: the whole server requires it, or swap is a TLS-only export. Said
    /// in discovery answers, and it shuts out the oldstyle handshake, which cannot do TLS.
    /// </summary>
    public bool SwapRequiresTls => _rules.Tls is var tls && (tls.Mode == TlsMode.Require || tls.TlsOnlyExports.Contains(SwapExportName.Prefix));

    /// <summary>Whether an export (by policy name) is hidden and closed on this connection until it establishes TLS (SELECTIVETLS).</summary>
    public bool HiddenBeforeTls(string policyName, bool overTls) => HiddenBeforeTls(_rules.Tls, policyName, overTls);

    private static bool HiddenBeforeTls(TlsConfiguration tls, string policyName, bool overTls) =>
        !overTls && tls.Mode != TlsMode.Off && tls.TlsOnlyExports.Contains(policyName);

    /// <summary>Whether the export's own address rules (if it has any) let this address use it.</summary>
    public bool ExportAllows(string policyName, IPAddress? address) => _rules.Policy.CheckExport(policyName, address) is null;

    /// <summary>
    /// The export's own rules for this client: null when it may use it; otherwise the refusal. <paramref name="shownName"/>
    /// is the name the client asked for (a swap area's name carries its size and token; its rules are those of "swap").
    /// </summary>
    public ExportRefusal? AdmitExport(string policyName, string shownName, IPAddress? address, bool overTls)
    {
        var rules = _rules;
        if (HiddenBeforeTls(rules.Tls, policyName, overTls))
        {
            return new ExportRefusal(NbdOptionReplyType.ErrTlsReqd, $"export '{shownName}' is served only over TLS", null);
        }
        if (rules.Policy.CheckExport(policyName, address) is { } denied)
        {
            return new ExportRefusal(NbdOptionReplyType.ErrPolicy, $"access to '{shownName}' denied by the server's rules", denied);
        }
        return null;
    }

    /// <summary>Counts a client into an export's transmission phase; false (and nothing counted) at max-clients-per-export.</summary>
    public bool TryEnterExport(string policyName)
    {
        var max = _rules.Policy.Limits.MaxClientsPerExport;
        while (true)
        {
            var current = _clientsPerExport.GetOrAdd(policyName, 0);
            if (max > 0 && current >= max)
            {
                return false;
            }
            if (_clientsPerExport.TryUpdate(policyName, current + 1, current))
            {
                return true;
            }
        }
    }

    /// <summary>Counts a client out of an export (called by the export's lease only).</summary>
    public void LeaveExport(string policyName) => _clientsPerExport.AddOrUpdate(policyName, 0, static (_, n) => Math.Max(0, n - 1));
}
