using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using NetSwap.Daemon;
using NetSwap.Daemon.Configuration;

try
{
    return await Daemon.RunAsync(args);
}
catch (Exception e)
{
    // Last resort: whatever a check above missed ends in one line and exit 1, never a stack trace (issue 14, item 6).
    await Console.Error.WriteLineAsync($"netswapd: {e.GetType().Name}: {e.Message}");
    return 1;
}

namespace NetSwap.Daemon
{
    using NetSwap.Daemon.Logging;
    using NetSwap.Server.Access;
    using NetSwap.Server.Tls;
    using NetSwap.Server.Exports;
    using NetSwap.Server.Exports.Swap;
    using NetSwap.Server.Hosting;
    using NetSwap.Server.Transport;

    internal static class Daemon
    {
        public const int ExitOk = 0;
        public const int ExitFailure = 1;
        public const int ExitUsage = 2;

        public static async Task<int> RunAsync(string[] args)
        {
            // `status`, --help, --version and shell completion ([suggest]) are System.CommandLine's to run; what is
            // left is the daemon itself.
            var (root, _) = CommandLine.Build();
            var parse = root.Parse(args);
            // (The shell's [suggest] directive passes the line being completed, unknown words and all.)
            var completion = root.Directives.OfType<System.CommandLine.Completions.SuggestDirective>().Any(d => d.Action is not null && d.Action == parse.Action);
            if ((parse.Errors.Count == 0 && parse.UnmatchedTokens.Count == 0 && parse.Action != root.Action) || completion)
            {
                return await parse.InvokeAsync(new System.CommandLine.InvocationConfiguration { EnableDefaultExceptionHandler = false });
            }
            DaemonSettings settings;
            try
            {
                settings = LoadSettings(args);
            }
            catch (UsageException e)
            {
                await Console.Error.WriteLineAsync($"netswapd: {e.Message}");
                return ExitUsage;
            }
            catch (ConfigFileException e)
            {
                await Console.Error.WriteLineAsync($"netswapd: configuration error: {e.Message}");
                return ExitFailure;
            }

            var level = settings.Verbosity switch
            {
                < 0 => LogLevel.Warning,
                0 => LogLevel.Information,
                1 => LogLevel.Debug,
                _ => LogLevel.Trace,
            };
            // In inetd mode stderr may be the client's socket: a log line there would corrupt the protocol.
            var syslog = settings.LogTarget == "syslog" || (settings.LogTarget == "auto" && settings.Inetd && SystemdActivation.IsSocket(2));
            using var loggerFactory = LoggerFactory.Create(b => b.SetMinimumLevel(level)
                .AddProvider(syslog ? new SyslogLoggerProvider(level) : new StderrLoggerProvider(level)));
            var logger = loggerFactory.CreateLogger("netswapd");

            ExportCatalog catalog;
            try
            {
                catalog = BuildCatalog(settings, logger);
            }
            catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
            {
                DaemonLog.StartFailed(logger, e.Message);
                return ExitFailure;
            }
            using var ownedCatalog = catalog;

            AccessPolicy policy;
            TlsConfiguration tls;
            try
            {
                // The same two steps SIGHUP repeats (Reload): the client list, certificates and CRL are read here.
                policy = BuildPolicy(settings);
                tls = BuildTls(settings);
            }
            catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
            {
                DaemonLog.StartFailed(logger, e.Message);
                return ExitFailure;
            }
            // --check-config checks the access rules, client list and TLS credentials too: what would stop a start.
            if (settings.CheckConfig)
            {
                await Console.Out.WriteLineAsync($"configuration valid: {catalog.Files.Count} file exports, swap {(catalog.Swap is null ? "off" : "on")}, TLS {tls.Mode.ToString().ToLowerInvariant()}, listening on {string.Join(", ", settings.EffectiveListen)}");
                return ExitOk;
            }
            LogPolicy(logger, policy);
            LogTls(logger, tls);
            var context = new NbdServerContext(catalog, settings.Server, logger, policy) { Tls = tls };
            ServerLog.Limits(logger, settings.Server.HandshakeTimeout, settings.Server.MaxRequestsInFlight, settings.Server.ConnectionBufferBytes, settings.Server.PayloadMemoryBytes, settings.Server.ShutdownTimeout,
                settings.Server.SendTimeout, settings.Server.PayloadTimeout);
            await using var server = new NbdServer(context);
            var startedAt = DateTimeOffset.UtcNow;

            if (settings.Inetd)
            {
                // inetd/xinetd: the connection is standard input; serve it and exit.
                if (!SystemdActivation.IsSocket(0) || SystemdActivation.IsListening(0))
                {
                    DaemonLog.StartFailed(logger, "--inetd needs a connected socket on standard input: run from inetd in 'nowait' mode (one process per connection), or use socket activation without --inetd");
                    return ExitFailure;
                }
                var socket = new System.Net.Sockets.Socket(new System.Net.Sockets.SafeSocketHandle(0, ownsHandle: false));
                await server.Serve(socket);
                return ExitOk;
            }

            var (activated, connected, datagram) = SystemdActivation.TakeSockets();
            foreach (var socket in activated)
            {
                server.StartListening(socket);
            }
            if ((activated.Count == 0 && connected.Count == 0) || settings.Listen is not null)
            {
                if (!BindListeners(server, settings, logger))
                {
                    return ExitFailure;
                }
            }
            foreach (var endpoint in settings.OldstyleListen)
            {
                if (catalog.Swap is null)
                {
                    DaemonLog.StartFailed(logger, "--oldstyle-listen serves swap areas, but swap is off");
                    return ExitFailure;
                }
                try
                {
                    server.StartListening(SocketSetup.Listen(endpoint), oldstyle: true);
                }
                catch (System.Net.Sockets.SocketException e)
                {
                    DaemonLog.StartFailed(logger, $"cannot listen on {endpoint}: {e.Message}");
                    return ExitFailure;
                }
            }

            NetSwap.Server.Discovery.DiscoveryResponder? discovery = null;
            if (settings.Discovery && catalog.Swap is not null && server.Listeners.Count > 0)
            {
                var nbdPort = (ushort)(((System.Net.IPEndPoint?)server.Listeners[0].LocalEndPoint)?.Port ?? 9572);
                var name = Environment.MachineName;
                NetSwap.Protocol.Discovery.DiscoveryReply Answer(System.Net.IPAddress client, NetSwap.Protocol.Discovery.DiscoveryProbe probe) =>
                    NetSwap.Server.Discovery.DiscoveryAnswer.Build(client, probe, server, catalog, nbdPort, Version, name);
                try
                {
                    // The unit's ListenDatagram= sockets when systemd passed some: a probe may be what started us.
                    discovery = datagram.Count > 0
                        ? NetSwap.Server.Discovery.DiscoveryResponder.Serve(context, datagram, Answer)
                        : NetSwap.Server.Discovery.DiscoveryResponder.Start(context,
                            [new System.Net.IPEndPoint(System.Net.IPAddress.Any, settings.DiscoveryPort), new System.Net.IPEndPoint(System.Net.IPAddress.IPv6Any, settings.DiscoveryPort)],
                            Answer);
                }
                catch (System.Net.Sockets.SocketException e)
                {
                    DaemonLog.DiscoveryUnavailable(logger, settings.DiscoveryPort, e.Message);
                }
            }

            if (discovery is null)
            {
                // Discovery is off (or swap is): the unit's datagram sockets stay systemd's alone.
                foreach (var socket in datagram)
                {
                    socket.Dispose();
                }
            }

            ControlServer? control = null;
            try
            {
                control = ControlServer.Start(settings.ControlSocket ?? StatusCommand.DefaultSocketPath(),
                    () => ControlServer.Snapshot(server, catalog, Version, startedAt), logger);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Net.Sockets.SocketException)
            {
                DaemonLog.ControlUnavailable(logger, e.Message);
            }

            var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.TrySetResult(); });
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.TrySetResult(); });
            SignalDispositions.Unignore(SignalDispositions.SigHup);
            using var sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, c =>
            {
                c.Cancel = true;
                _ = Task.Run(() => Reload(args, context, logger));
            });
            DaemonLog.Ready(logger, Environment.ProcessId);
            if (connected.Count > 0 && server.Listeners.Count == 0)
            {
                // systemd Accept=yes: one connection per instance; exit when it is done.
                await Task.WhenAny(Task.WhenAll(connected.Select(s => server.Serve(s))), stop.Task);
            }
            else
            {
                foreach (var socket in connected)
                {
                    _ = server.Serve(socket);
                }
                await stop.Task;
            }
            await server.StopAsync();
            if (discovery is not null)
            {
                await discovery.DisposeAsync();
            }
            if (control is not null)
            {
                await control.DisposeAsync();
            }
            return ExitOk;
        }

        /// <summary>
        /// SIGHUP: reads the configuration again and swaps in the new access rules, limits and client list; connected
        /// clients keep their connections. A broken configuration is refused whole and the one in force stays.
        /// </summary>
        private static void Reload(string[] args, NbdServerContext context, ILogger logger)
        {
            try
            {
                var settings = LoadSettings(args);
                var policy = BuildPolicy(settings);
                var tls = BuildTls(settings);
                context.Policy = policy;
                context.Tls = tls;
                DaemonLog.Reloaded(logger, settings.ConfigPath ?? "(no config file)");
                LogPolicy(logger, policy);
                LogTls(logger, tls);
            }
            catch (Exception e)
            {
                // Whatever is wrong with the new configuration, the one in force stays (and the process with it).
                DaemonLog.ReloadRejected(logger, e.Message);
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

        private static void LogTls(ILogger logger, TlsConfiguration tls)
        {
            if (tls.Mode == TlsMode.Off)
            {
                DaemonLog.TlsOff(logger);
                return;
            }
            DaemonLog.TlsOn(logger, tls.Mode, tls.ServerCertificate!.Subject, TlsConfiguration.Fingerprint(tls.ServerCertificate), tls.CaCertificates.Count,
                tls.VerifyClient, tls.AllowedFingerprints?.Count ?? 0, tls.Revocations?.Count ?? 0, tls.TlsOnlyExports.Count == 0 ? "none" : string.Join(", ", tls.TlsOnlyExports));
        }

        private static void LogPolicy(ILogger logger, AccessPolicy policy)
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

        internal static DaemonSettings LoadSettings(IReadOnlyList<string> args)
        {
            var parsed = CommandLine.Parse(args);
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

        private static bool BindListeners(NbdServer server, DaemonSettings settings, ILogger logger)
        {
            var bound = 0;
            foreach (var endpoint in settings.EffectiveListen)
            {
                try
                {
                    server.StartListening(SocketSetup.Listen(endpoint));
                    bound++;
                }
                catch (SocketException e) when (settings.Listen is null && endpoint.AddressFamily == AddressFamily.InterNetworkV6
                                                 && e.SocketErrorCode is SocketError.AddressFamilyNotSupported or SocketError.AddressNotAvailable)
                {
                    // The embedded default includes [::]; a host without IPv6 still serves IPv4.
                    DaemonLog.ListenSkipped(logger, endpoint.ToString(), e.Message);
                }
                catch (SocketException e)
                {
                    DaemonLog.StartFailed(logger, $"cannot listen on {endpoint}: {e.Message}");
                    return false;
                }
            }
            return bound > 0;
        }
    }

    internal static partial class DaemonLog
    {
        [LoggerMessage(1000, LogLevel.Critical, "cannot start: {Reason}")]
        public static partial void StartFailed(ILogger logger, string reason);

        [LoggerMessage(1001, LogLevel.Information, "netswapd ready (pid {Pid})")]
        public static partial void Ready(ILogger logger, int pid);

        [LoggerMessage(1002, LogLevel.Warning, "not listening on {Endpoint}: {Reason}")]
        public static partial void ListenSkipped(ILogger logger, string endpoint, string reason);

        [LoggerMessage(1003, LogLevel.Warning, "no control socket ({Reason}): `netswapd status` will not work")]
        public static partial void ControlUnavailable(ILogger logger, string reason);

        [LoggerMessage(1005, LogLevel.Information, "SIGHUP: configuration reloaded from {Path}; connected clients keep their connections")]
        public static partial void Reloaded(ILogger logger, string path);

        [LoggerMessage(1006, LogLevel.Error, "SIGHUP: new configuration rejected, the previous one stays in force: {Reason}")]
        public static partial void ReloadRejected(ILogger logger, string reason);

        [LoggerMessage(1007, LogLevel.Information, "TLS off: NBD_OPT_STARTTLS is refused")]
        public static partial void TlsOff(ILogger logger);

        [LoggerMessage(1008, LogLevel.Information, "TLS {Mode}: server certificate {Subject} (SHA-256 {Fingerprint}), {CaCount} CA certificates, verify client {VerifyClient}, {Fingerprints} listed client fingerprints, {Revoked} revoked certificates; TLS-only exports: {TlsOnly}")]
        public static partial void TlsOn(ILogger logger, TlsMode mode, string subject, string fingerprint, int caCount, bool verifyClient, int fingerprints, int revoked, string tlsOnly);

        [LoggerMessage(1009, LogLevel.Warning, "no discovery on udp port {Port} ({Reason}): clients must be given the server's address")]
        public static partial void DiscoveryUnavailable(ILogger logger, int port, string reason);

        [LoggerMessage(1004, LogLevel.Information, "swap rule: clients in {Subnet} get {Size} B by default")]
        public static partial void SwapRule(ILogger logger, string subnet, long size);
    }
}
