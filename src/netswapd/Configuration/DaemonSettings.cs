using System.Net;
using NetSwap.Server.Exports;
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
    public bool ShowHelp { get; set; }
    public bool ShowVersion { get; set; }
    public bool CheckConfig { get; set; }

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
        new("shutdown-timeout", "DURATION", "On SIGTERM, how long requests in flight may take before connections are closed. Default: 5s.",
            static (s, v, _) => s.Server.ShutdownTimeout = ValueParsers.Duration(v)),
        new("keepalive-time", "DURATION", "Idle time before TCP keepalive probes start. Default: 30s.",
            static (s, v, _) => s.Server.Tcp.KeepAliveTime = NonZero(ValueParsers.Duration(v))),
        new("keepalive-interval", "DURATION", "Time between keepalive probes. Default: 10s.",
            static (s, v, _) => s.Server.Tcp.KeepAliveInterval = NonZero(ValueParsers.Duration(v))),
        new("keepalive-count", "N", "Unanswered probes before the peer is declared dead. Default: 3.",
            static (s, v, _) => s.Server.Tcp.KeepAliveCount = ValueParsers.Integer(v, 1, 127)),
        new("tcp-user-timeout", "DURATION", "TCP_USER_TIMEOUT: unacknowledged data older than this ends the connection. Default: 60s.",
            static (s, v, _) => s.Server.Tcp.UserTimeout = ValueParsers.Duration(v)),
        new("verbose", null, "More log detail: -v for debug, -vv for trace. In the config file: verbose = 0, 1 or 2.",
            static (s, v, source) => s.Verbosity = source == SettingSource.CommandLine ? s.Verbosity + 1 : ValueParsers.Integer(v, 0, 2), Short: 'v'),
        new("quiet", null, "Log warnings and errors only.", static (s, _, _) => s.Verbosity = -1, Short: 'q'),
        new("help", null, "Show this help and exit.", static (s, _, _) => s.ShowHelp = true, Short: 'h', InConfigFile: false),
        new("version", null, "Show the version and exit.", static (s, _, _) => s.ShowVersion = true, InConfigFile: false),
    ];

    public static SettingSpec? Find(string name) => All.FirstOrDefault(s => s.Name == name);

    public static SettingSpec? FindShort(char name) => All.FirstOrDefault(s => s.Short == name);

    private static TimeSpan NonZero(TimeSpan value) =>
        value > TimeSpan.Zero ? value : throw new SettingValueException("must be greater than zero");

    private static long AtLeast(long value, long minimum) =>
        value >= minimum ? value : throw new SettingValueException($"must be at least {minimum} bytes");

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
