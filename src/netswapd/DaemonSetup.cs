using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.Logging;
using NetSwap.Daemon.Configuration;
using NetSwap.Daemon.Logging;
using NetSwap.Server.Access;
using NetSwap.Server.Exports;
using NetSwap.Server.Exports.Swap;
using NetSwap.Server.Hosting;
using NetSwap.Server.Tls;

namespace NetSwap.Daemon;

/// <summary>From settings to the server's parts: the export catalog, the access policy and the TLS configuration
/// (each also rebuilt on SIGHUP where it can change), and how they are logged.</summary>
internal static partial class Daemon
{
    /// <summary>
    /// Everything a start builds from the settings: the exports (swap directory included), the access rules with the
    /// client list, and the TLS credentials with the CRL. False, with the reason logged, when any of them cannot be.
    /// </summary>
    internal static bool TryBuild(DaemonSettings settings, ILogger logger, [NotNullWhen(true)] out ExportCatalog? catalog,
        [NotNullWhen(true)] out AccessPolicy? policy, [NotNullWhen(true)] out TlsConfiguration? tls)
    {
        (policy, tls) = (null, null);
        try
        {
            catalog = BuildCatalog(settings, logger);
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
        {
            DaemonLog.StartFailed(logger, e.Message);
            catalog = null;
            return false;
        }
        try
        {
            // The same two steps SIGHUP repeats (Reload): the client list, certificates and CRL are read here.
            policy = BuildPolicy(settings);
            tls = BuildTls(settings);
            return true;
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
        {
            DaemonLog.StartFailed(logger, e.Message);
            catalog.Dispose();
            catalog = null;
            return false;
        }
    }

    /// <summary>The access rules: the configured ones, or (without any allow rule) loopback and this host's subnets.</summary>
    internal static AccessPolicy BuildPolicy(DaemonSettings settings)
    {
        var rules = new List<AddressRule>();
        if (settings.Allow.Count == 0)
        {
            rules.AddRange(AddressRuleSet.LocalDefaults());
        }
        rules.AddRange(settings.Allow);
        rules.AddRange(settings.Deny);
        var perExport = new Dictionary<string, AddressRuleSet>(StringComparer.Ordinal);
        foreach (var export in settings.Exports.Where(e => e.Rules.Count > 0))
        {
            perExport[export.Name] = new AddressRuleSet(export.Rules);
        }
        if (settings.SwapRules.Count > 0)
        {
            perExport[NetSwap.Protocol.Swap.SwapExportName.Prefix] = new AddressRuleSet(settings.SwapRules);
        }
        var clients = settings.ClientsFile is null ? null : new ClientList(settings.ClientsFile);
        return new AccessPolicy(new AddressRuleSet(rules), perExport, clients, settings.Limits);
    }

    /// <summary>TLS credentials and client-authentication rules, loaded (and checked) now: at start and on SIGHUP.</summary>
    internal static TlsConfiguration BuildTls(DaemonSettings settings)
    {
        var tlsOnly = new HashSet<string>(settings.Exports.Where(e => e.TlsOnly).Select(e => e.Name), StringComparer.Ordinal);
        if (settings.SwapTlsOnly)
        {
            tlsOnly.Add(NetSwap.Protocol.Swap.SwapExportName.Prefix);
        }
        // systemd's LoadCredential= (CREDENTIALS_DIRECTORY): a file of nbdkit's layout found there wins over the one in
        // --tls-certificates, so the key can stay readable by root alone; --tls-cert, --tls-key… still win over both.
        var credentials = SystemdActivation.Directory("CREDENTIALS_DIRECTORY");
        string? Credential(string name) =>
            credentials is not null && File.Exists(Path.Combine(credentials, name)) ? Path.Combine(credentials, name) : null;
        return TlsConfiguration.Load(settings.TlsMode, settings.TlsCertificatesDirectory, settings.TlsCert ?? Credential("server-cert.pem"),
            settings.TlsKey ?? Credential("server-key.pem"), settings.TlsCa ?? Credential("ca-cert.pem"),
            settings.TlsVerifyClient, settings.TlsClientsFile, tlsOnly, settings.TlsCrl ?? Credential("ca-crl.pem"));
    }

    internal static void LogTls(ILogger logger, TlsConfiguration tls)
    {
        if (tls.Mode == TlsMode.Off)
        {
            DaemonLog.TlsOff(logger);
            return;
        }
        DaemonLog.TlsOn(logger, tls.Mode, tls.ServerCertificate!.Subject, TlsConfiguration.Fingerprint(tls.ServerCertificate), tls.CaCertificates.Count,
            tls.VerifyClient, tls.AllowedFingerprints?.Count ?? 0, tls.Revocations?.Count ?? 0, tls.TlsOnlyExports.Count == 0 ? "none" : string.Join(", ", tls.TlsOnlyExports));
    }

    internal static void LogPolicy(ILogger logger, AccessPolicy policy)
    {
        foreach (var rule in policy.Global.Rules)
        {
            ServerLog.AccessRule(logger, rule.ToString());
        }
        foreach (var (export, rules) in policy.PerExport)
        {
            foreach (var rule in rules.Rules)
            {
                ServerLog.AccessRule(logger, $"export '{export}': {rule}");
            }
        }
        ServerLog.AccessRule(logger, "anything no rule matches is denied");
        var l = policy.Limits;
        ServerLog.AccessLimits(logger, l.MaxClients, l.MaxClientsPerAddress, l.MaxClientsPerExport, l.ConnectionRate, l.ConnectionBurst,
            l.BandwidthPerClient, l.BandwidthTotal, policy.Clients is null ? "none" : $"{policy.Clients.Path} ({policy.Clients.Count} entries)");
    }

    public static string Version => typeof(Daemon).Assembly.GetName().Version?.ToString(3) ?? "0";

    private static ExportCatalog BuildCatalog(DaemonSettings settings, ILogger logger)
    {
        var files = new FileExportCatalog(settings.Exports, settings.DefaultExport);
        try
        {
            foreach (var export in files.List(new ConnectionInfo(0, "")).OfType<FileExport>())
            {
                ServerLog.ExportConfigured(logger, export.Name, export.Path, export.Size, export.IsReadOnly ? "read-only" : "read-write");
            }
            SwapExportSource? swap = null;
            if (settings.Swap.Enabled)
            {
                var options = settings.Swap;
                // Under systemd the unit's StateDirectory= (/var/lib/netswap, the netswap user's) is the default.
                if (!settings.SwapDirectoryFromSettings && SystemdActivation.Directory("STATE_DIRECTORY") is { } state)
                {
                    options.Directory = state;
                    settings.SwapDirectoryFromSettings = true;
                }
                var directory = SwapDirectory.Prepare(options.Directory, isDefault: !settings.SwapDirectoryFromSettings, out var fellBack, checkOnly: settings.CheckConfig);
                if (fellBack)
                {
                    SwapLog.DirectoryFallback(logger, options.Directory, directory.Path);
                }
                options.Directory = directory.Path;
                // --check-config changes nothing on disk.
                foreach (var (name, size) in settings.CheckConfig ? [] : directory.RemoveLeftovers())
                {
                    SwapLog.LeftoverRemoved(logger, name, size, directory.Path);
                }
                SwapLog.Configured(logger, directory.Path, SwapDirectory.IsRoot ? "root" : "unprivileged", options.DefaultSize, options.MaxSize,
                    options.Budget > 0 ? options.Budget + " B" : "none", options.ReservePercent, options.Allocation, options.Format, options.Grace);
                foreach (var rule in options.Rules)
                {
                    DaemonLog.SwapRule(logger, rule.Subnet.ToString(), rule.Size);
                }
                swap = new SwapExportSource(new SwapAreaRegistry(options, directory, logger));
            }
            return new ExportCatalog(files, swap);
        }
        catch
        {
            files.Dispose();
            throw;
        }
    }

    internal static DaemonSettings LoadSettings(IReadOnlyList<string> args) => LoadSettings(CommandLine.Parse(args));

    /// <summary>Embedded defaults, then the config file (--config, or the default one when present), then the command line.</summary>
    internal static DaemonSettings LoadSettings(List<(SettingSpec Spec, string Value)> parsed)
    {
        var settings = new DaemonSettings();
        var configPath = parsed.LastOrDefault(p => p.Spec.Name == "config").Value;
        if (configPath is null && File.Exists(DaemonSettings.DefaultConfigPath))
        {
            configPath = DaemonSettings.DefaultConfigPath;
        }
        if (configPath is not null)
        {
            ConfigFile.Load(configPath, settings);
        }
        CommandLine.Apply(settings, parsed);
        settings.ConfigPath = configPath;
        return settings;
    }
}
