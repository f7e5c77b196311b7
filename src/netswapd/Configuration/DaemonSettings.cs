using System.Net;
using NetSwap.Server.Access;
using NetSwap.Server.Exports;
using NetSwap.Server.Exports.Swap;
using NetSwap.Server.Hosting;

namespace NetSwap.Daemon.Configuration;

/// <summary>Everything the daemon was told, by embedded defaults, the config file and the command line, in that order.</summary>
internal sealed class DaemonSettings
{
    public const int DefaultPort = 9572;
    public const string DefaultConfigPath = "/etc/netswap/netswapd.toml";

    public static readonly IReadOnlyList<IPEndPoint> DefaultListen =
        [new IPEndPoint(IPAddress.Any, DefaultPort), new IPEndPoint(IPAddress.IPv6Any, DefaultPort)];

    public List<IPEndPoint>? Listen { get; set; }
    public bool ListenFromCommandLine { get; set; }
    public List<ExportDefinition> Exports { get; } = [];
    public string? DefaultExport { get; set; }
    public NbdServerOptions Server { get; } = new();
    public int Verbosity { get; set; }
    public string? ConfigPath { get; set; }
    public bool CheckConfig { get; set; }
    public SwapOptions Swap { get; } = new();
    public bool SwapDirectoryFromSettings { get; set; }
    public bool Inetd { get; set; }
    public List<IPEndPoint> OldstyleListen { get; } = [];
    public string? ControlSocket { get; set; }
    public string LogTarget { get; set; } = "auto";
    public List<AddressRule> Allow { get; } = [];
    public List<AddressRule> Deny { get; } = [];
    public List<AddressRule> SwapRules { get; } = [];
    public string? ClientsFile { get; set; }
    public AccessLimits Limits { get; set; } = new();
    public NetSwap.Server.Tls.TlsMode TlsMode { get; set; } = NetSwap.Server.Tls.TlsMode.Off;
    public string? TlsCertificatesDirectory { get; set; }
    public string? TlsCert { get; set; }
    public string? TlsKey { get; set; }
    public string? TlsCa { get; set; }
    public bool TlsVerifyClient { get; set; }
    public string? TlsClientsFile { get; set; }
    public string? TlsCrl { get; set; }
    public bool SwapTlsOnly { get; set; }
    public bool Discovery { get; set; } = true;
    public int DiscoveryPort { get; set; } = 9572;

    public IReadOnlyList<IPEndPoint> EffectiveListen => Listen ?? DefaultListen;
}

internal enum SettingSource
{
    ConfigFile,
    CommandLine,
}

/// <summary>
/// One setting, named the same on the command line (--NAME) and in the config file (NAME = ...). Every setting is in
/// this table, so --help, the README and the config file cannot drift apart.
/// </summary>
internal sealed record SettingSpec(
    string Name,
    string? ValueName,
    string Help,
    Action<DaemonSettings, string, SettingSource> Apply,
    char Short = '\0',
    bool InConfigFile = true,
    bool Repeatable = false);

internal static class SettingTable
{
    public static readonly IReadOnlyList<SettingSpec> All =
    [
        new("listen", "ADDR:PORT", "Listen on this address and TCP port; repeatable. Default: 0.0.0.0:9572 and [::]:9572.",
            static (s, v, source) =>
            {
                if (source == SettingSource.CommandLine && !s.ListenFromCommandLine)
                {
                    // The command line replaces the config file's list rather than adding to it.
                    s.Listen = null;
                    s.ListenFromCommandLine = true;
                }
                (s.Listen ??= []).Add(ValueParsers.Endpoint(v));
            }, Repeatable: true),
        new("export", "NAME=PATH[,readonly]", "Serve a file or block device under NAME; repeatable. In the config file use [exports.NAME] tables.",
            static (s, v, _) => s.Exports.Add(ParseExport(v)), InConfigFile: false, Repeatable: true),
        new("default-export", "NAME", "The export a client gets when it asks for the empty name \"\".",
            static (s, v, _) => s.DefaultExport = v),
        new("config", "FILE", $"Read settings from this TOML file first (default: {DaemonSettings.DefaultConfigPath} when present).",
            static (s, v, _) => s.ConfigPath = v, InConfigFile: false),
        new("check-config", null, "Check the configuration (file, exports, values) and exit: 0 when valid, 1 with the error otherwise.",
            static (s, _, _) => s.CheckConfig = true, InConfigFile: false),
        new("handshake-timeout", "DURATION", "Time a client has to finish the NBD handshake. Default: 10s.",
            static (s, v, _) => s.Server.HandshakeTimeout = NonZero(ValueParsers.Duration(v))),
        new("max-requests-in-flight", "N", "Requests one connection may have in flight. Default: 64.",
            static (s, v, _) => s.Server.MaxRequestsInFlight = ValueParsers.Integer(v, 1, 4096)),
        new("connection-buffer", "SIZE", "Payload buffer one connection may hold at once (at least 256K). Default: 1M.",
            static (s, v, _) => s.Server.ConnectionBufferBytes = (int)Math.Clamp(AtLeast(ValueParsers.Size(v), 256 * 1024), 0, 1 << 30)),
        new("payload-memory", "SIZE", "Payload buffer all connections together may hold at once (at least 256K); a request waits for its share. Default: 256M.",
            static (s, v, _) => s.Server.PayloadMemoryBytes = (int)Math.Clamp(AtLeast(ValueParsers.Size(v), 256 * 1024), 0, 1 << 30)),
        new("shutdown-timeout", "DURATION", "On SIGTERM, how long requests in flight may take before connections are closed. Default: 5s.",
            static (s, v, _) => s.Server.ShutdownTimeout = ValueParsers.Duration(v)),
        new("send-timeout", "DURATION", "A client that takes no byte of a waiting reply for this long (it stopped reading) is cut; its swap area waits out swap-grace. Default: 30s.",
            static (s, v, _) => s.Server.SendTimeout = NonZero(ValueParsers.Duration(v))),
        new("payload-timeout", "DURATION", "A request begun (header or WRITE payload) whose rest stops arriving for this long cuts the connection. Default: 30s.",
            static (s, v, _) => s.Server.PayloadTimeout = NonZero(ValueParsers.Duration(v))),
        new("payload-pipes", "on|off", "On: WRITE payloads of 64K to 256K over plain TCP wait in kernel pipes and go to the export's file by splice, one copy instead of two and no buffer of the daemon's held while they wait; off: every payload is read into the daemon's buffers. Both count against connection-buffer and payload-memory. Default: on.",
            static (s, v, _) => s.Server.PayloadPipes = ValueParsers.Boolean(v)),
        new("keepalive-time", "DURATION", "Idle time before TCP keepalive probes start. Default: 30s.",
            static (s, v, _) => s.Server.Tcp.KeepAliveTime = NonZero(ValueParsers.Duration(v))),
        new("keepalive-interval", "DURATION", "Time between keepalive probes. Default: 10s.",
            static (s, v, _) => s.Server.Tcp.KeepAliveInterval = NonZero(ValueParsers.Duration(v))),
        new("keepalive-count", "N", "Unanswered probes before the peer is declared dead. Default: 3.",
            static (s, v, _) => s.Server.Tcp.KeepAliveCount = ValueParsers.Integer(v, 1, 127)),
        new("tcp-user-timeout", "DURATION", "TCP_USER_TIMEOUT: unacknowledged data older than this ends the connection. Default: 60s.",
            static (s, v, _) => s.Server.Tcp.UserTimeout = ValueParsers.Duration(v)),
        new("swap", "on|off", "Swap on demand: the names swap, swap/TOKEN (and \"\" when there are no file exports) give each connection a private swap area. Default: on.",
            static (s, v, _) => s.Swap.Enabled = ValueParsers.Boolean(v)),
        new("swap-dir", "DIR", $"Where swap areas live (nameless files, mode 0600, in a 0700 directory). Default: systemd's STATE_DIRECTORY when set, else {SwapOptions.DefaultDirectory}; a per-user directory when not root.",
            static (s, v, _) => { s.Swap.Directory = Path.GetFullPath(v); s.SwapDirectoryFromSettings = true; }),
        new("swap-size", "SIZE", "Size of a client's area when it asks for none and no swap-rule matches. Default: 512M.",
            static (s, v, _) => s.Swap.DefaultSize = AtLeast(ValueParsers.Size(v), 40960)),
        new("swap-max-size", "SIZE", "Largest area a client may ask for in the export name (swap:SIZE). Default: 4G.",
            static (s, v, _) => s.Swap.MaxSize = AtLeast(ValueParsers.Size(v), 40960)),
        new("swap-budget", "SIZE", "Total size of all swap areas at once; 0: limited only by the free-space reserve. Default: 0.",
            static (s, v, _) => s.Swap.Budget = ValueParsers.Size(v)),
        new("swap-reserve", "PERCENT", "Part of the swap file system never handed out. Default: 5%.",
            static (s, v, _) => s.Swap.ReservePercent = ValueParsers.Percent(v)),
        new("swap-allocation", "reserve|sparse", "reserve: fallocate each area at connect (no ENOSPC while swapping); sparse: thin provisioning. Default: reserve.",
            static (s, v, _) => s.Swap.Allocation = v.Trim() switch
            {
                "reserve" => SwapAllocation.Reserve,
                "sparse" => SwapAllocation.Sparse,
                _ => throw new SettingValueException($"'{v}' is not reserve or sparse"),
            }),
        new("swap-format", "on|off", "Hand areas out with a Linux swap header (SWAPSPACE2, label netswap): swapon works without mkswap. Default: on.",
            static (s, v, _) => s.Swap.Format = ValueParsers.Boolean(v)),
        new("swap-grace", "DURATION", "How long the area of swap/TOKEN survives an unclean disconnect for the same client to reconnect. Default: 90s.",
            static (s, v, _) => s.Swap.Grace = ValueParsers.Duration(v)),
        new("swap-rule", "SUBNET=SIZE", "Default swap size for clients in SUBNET (most specific wins); repeatable. Config file: [[swap-rule]] tables with subnet and size.",
            static (s, v, _) => s.Swap.Rules.Add(ParseSwapRule(v)), InConfigFile: false, Repeatable: true),
        new("inetd", null, "Serve the one connection on standard input (inetd/xinetd), then exit.",
            static (s, _, _) => s.Inetd = true, InConfigFile: false),
        new("oldstyle-listen", "ADDR:PORT", "Also listen for oldstyle-handshake clients (nbd-client before 3.10): each gets a swap area of the default size; repeatable.",
            static (s, v, _) => s.OldstyleListen.Add(ValueParsers.Endpoint(v)), Repeatable: true),
        new("control-socket", "PATH", "Unix socket for `netswapd status` (mode 0600; its directory is made 0700 when missing, an existing one is left as it is). Default: netswapd.sock in systemd's RUNTIME_DIRECTORY when set, else /run/netswap/netswapd.sock; a per-user path when not root.",
            static (s, v, _) => s.ControlSocket = Path.GetFullPath(v)),
        new("log", "auto|stderr|syslog", "Where logs go. auto: stderr, or syslog when stderr is the client's socket (inetd). Never stdout. Default: auto.",
            static (s, v, _) => s.LogTarget = v.Trim() is "auto" or "stderr" or "syslog" ? v.Trim() : throw new SettingValueException($"'{v}' is not auto, stderr or syslog")),
        new("allow", "CIDR", "Admit clients from this address or subnet (IPv4 or IPv6); repeatable. The most specific rule wins, deny on a tie. Without any allow rule: loopback and this host's own subnets.",
            static (s, v, source) => s.Allow.Add(Rule(v, RuleAction.Allow, source)), Repeatable: true),
        new("deny", "CIDR", "Refuse clients from this address or subnet; repeatable.",
            static (s, v, source) => s.Deny.Add(Rule(v, RuleAction.Deny, source)), Repeatable: true),
        new("swap-allow", "CIDR", "Rules of the swap export alone (after the global ones); repeatable.",
            static (s, v, source) => s.SwapRules.Add(Rule(v, RuleAction.Allow, source)), Repeatable: true),
        new("swap-deny", "CIDR", "Refuse swap to this address or subnet; repeatable.",
            static (s, v, source) => s.SwapRules.Add(Rule(v, RuleAction.Deny, source)), Repeatable: true),
        new("clients", "FILE", "Only clients listed in FILE (addresses, subnets, MAC addresses; one per line) are admitted. Re-read when it changes.",
            static (s, v, _) => s.ClientsFile = Path.GetFullPath(v)),
        new("max-clients", "N", "Connections at once, all clients together (0: no limit). Default: 1024.",
            static (s, v, _) => s.Limits = s.Limits with { MaxClients = ValueParsers.Integer(v, 0, 1_000_000) }),
        new("max-clients-per-address", "N", "Connections at once from one address (0: no limit). Default: 16.",
            static (s, v, _) => s.Limits = s.Limits with { MaxClientsPerAddress = ValueParsers.Integer(v, 0, 1_000_000) }),
        new("max-clients-per-export", "N", "Clients of one export at once; every swap client counts for 'swap' (0: no limit). Default: 0.",
            static (s, v, _) => s.Limits = s.Limits with { MaxClientsPerExport = ValueParsers.Integer(v, 0, 1_000_000) }),
        new("connection-rate", "N", "New connections per second from one address; excess ones are closed at once (0: no limit). Default: 20.",
            static (s, v, _) => s.Limits = s.Limits with { ConnectionRate = ValueParsers.Integer(v, 0, 1_000_000) }),
        new("connection-burst", "N", "New connections one address may open at once before connection-rate applies. Default: 40.",
            static (s, v, _) => s.Limits = s.Limits with { ConnectionBurst = ValueParsers.Integer(v, 1, 1_000_000) }),
        new("bandwidth-per-client", "RATE", "Bytes per second one client may read and write (K, M, G suffixes; 0: no limit); I/O waits, never fails. Default: 0.",
            static (s, v, _) => s.Limits = s.Limits with { BandwidthPerClient = ValueParsers.Size(v) }),
        new("bandwidth-total", "RATE", "Bytes per second of all clients together (0: no limit). Default: 0.",
            static (s, v, _) => s.Limits = s.Limits with { BandwidthTotal = ValueParsers.Size(v) }),
        new("tls", "off|on|require", "TLS (NBD_OPT_STARTTLS): off; on (clients choose, TLS-only exports need it); require (nothing but STARTTLS in the clear). Default: off.",
            static (s, v, _) => s.TlsMode = v.Trim() switch
            {
                "off" => NetSwap.Server.Tls.TlsMode.Off,
                "on" => NetSwap.Server.Tls.TlsMode.On,
                "require" => NetSwap.Server.Tls.TlsMode.Require,
                _ => throw new SettingValueException($"'{v}' is not off, on or require"),
            }),
        new("tls-certificates", "DIR", "TLS credentials in nbdkit's layout: ca-cert.pem, server-cert.pem, server-key.pem (ca-crl.pem). Under systemd, files of these names passed with LoadCredential= (CREDENTIALS_DIRECTORY) win over the ones here.",
            static (s, v, _) => s.TlsCertificatesDirectory = Path.GetFullPath(v)),
        new("tls-cert", "FILE", "The server certificate (PEM); overrides the one in --tls-certificates.",
            static (s, v, _) => s.TlsCert = Path.GetFullPath(v)),
        new("tls-key", "FILE", "The server's private key (PEM).",
            static (s, v, _) => s.TlsKey = Path.GetFullPath(v)),
        new("tls-ca", "FILE", "CA certificate(s) (PEM) client certificates must chain to.",
            static (s, v, _) => s.TlsCa = Path.GetFullPath(v)),
        new("tls-crl", "FILE", "Certificate revocation list (PEM or DER) signed by the CA: revoked client certificates are refused. Default: ca-crl.pem in --tls-certificates when present.",
            static (s, v, _) => s.TlsCrl = Path.GetFullPath(v)),
        new("tls-verify-client", null, "Require a client certificate that chains to the CA (or is listed in --tls-clients).",
            static (s, v, _) => s.TlsVerifyClient = ValueParsers.Boolean(v)),
        new("tls-clients", "FILE", "SHA-256 fingerprints of accepted client certificates, one per line: keys without a CA.",
            static (s, v, _) => s.TlsClientsFile = Path.GetFullPath(v)),
        new("swap-tls-only", null, "Serve swap only over TLS (with --tls on). File exports take tls-only = true in their table.",
            static (s, v, _) => s.SwapTlsOnly = ValueParsers.Boolean(v)),
        new("discovery", "on|off", "Answer netswap clients' discovery probes on UDP (IPv4 broadcast, IPv6 multicast ff02::4e53:5750), over the address families a --listen address takes. Default: on (with swap).",
            static (s, v, _) => s.Discovery = ValueParsers.Boolean(v)),
        new("discovery-port", "PORT", "UDP port for discovery. Default: 9572.",
            static (s, v, _) => s.DiscoveryPort = ValueParsers.Integer(v, 1, 65535)),
        new("verbose", null, "More log detail: -v for debug, -vv for trace. In the config file: verbose = 0, 1 or 2.",
            static (s, v, source) => s.Verbosity = source == SettingSource.CommandLine ? s.Verbosity + 1 : ValueParsers.Integer(v, 0, 2), Short: 'v'),
        new("quiet", null, "Log warnings and errors only.", static (s, _, _) => s.Verbosity = -1, Short: 'q'),
    ];

    public static SettingSpec? Find(string name) => All.FirstOrDefault(s => s.Name == name);

    public static SettingSpec? FindShort(char name) => All.FirstOrDefault(s => s.Short == name);

    private static TimeSpan NonZero(TimeSpan value) =>
        value > TimeSpan.Zero ? value : throw new SettingValueException("must be greater than zero");

    private static long AtLeast(long value, long minimum) =>
        value >= minimum ? value : throw new SettingValueException($"must be at least {minimum} bytes");

    public static AddressRule Rule(string text, RuleAction action, SettingSource source)
    {
        var t = text.Trim();
        if (!IPNetwork.TryParse(t, out var network))
        {
            if (!IPAddress.TryParse(t, out var address))
            {
                throw new SettingValueException($"'{text}' is not an address or a subnet (examples: 10.0.5.0/24, 10.0.5.7, fd00::/64)");
            }
            network = AddressRuleSet.HostNetwork(address);
        }
        return new AddressRule(network, action, source == SettingSource.CommandLine ? "command line" : "config file");
    }

    /// <summary>SUBNET=SIZE: the command-line form of a swap size rule.</summary>
    public static SwapSizeRule ParseSwapRule(string text)
    {
        var equals = text.LastIndexOf('=');
        if (equals <= 0)
        {
            throw new SettingValueException($"'{text}' is not SUBNET=SIZE (example: 10.0.5.0/24=1G)");
        }
        return SwapRule(text[..equals], text[(equals + 1)..]);
    }

    public static SwapSizeRule SwapRule(string subnet, string size)
    {
        if (!IPNetwork.TryParse(subnet.Trim(), out var network))
        {
            throw new SettingValueException($"'{subnet}' is not a subnet (examples: 10.0.5.0/24, fd00::/64)");
        }
        return new SwapSizeRule(network, AtLeast(ValueParsers.Size(size), 40960));
    }

    /// <summary>NAME=PATH[,readonly]: the command-line form of an export.</summary>
    public static ExportDefinition ParseExport(string text)
    {
        var equals = text.IndexOf('=', StringComparison.Ordinal);
        if (equals <= 0 || equals == text.Length - 1)
        {
            throw new SettingValueException($"'{text}' is not NAME=PATH[,readonly]");
        }
        var name = text[..equals];
        var parts = text[(equals + 1)..].Split(',');
        var readOnly = false;
        foreach (var flag in parts.Skip(1))
        {
            readOnly = flag switch
            {
                "readonly" or "ro" => true,
                "readwrite" or "rw" => false,
                _ => throw new SettingValueException($"unknown export flag '{flag}' (known: readonly)"),
            };
        }
        return ExportFromParts(name, parts[0], readOnly, null);
    }

    public static ExportDefinition ExportFromParts(string name, string path, bool readOnly, string? description)
    {
        if (name.Length > 256 || name.Any(char.IsControl))
        {
            throw new SettingValueException($"export name '{name}' is too long or contains control characters");
        }
        if (!Path.IsPathFullyQualified(path))
        {
            path = Path.GetFullPath(path);
        }
        return new ExportDefinition(name, path, readOnly, description);
    }
}
