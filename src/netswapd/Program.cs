using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using NetSwap.Daemon;
using NetSwap.Daemon.Configuration;

return await Daemon.RunAsync(args);

namespace NetSwap.Daemon
{
    using NetSwap.Daemon.Logging;
    using NetSwap.Server.Exports;
    using NetSwap.Server.Hosting;
    using NetSwap.Server.Transport;

    internal static class Daemon
    {
        public const int ExitOk = 0;
        public const int ExitFailure = 1;
        public const int ExitUsage = 2;

        public static async Task<int> RunAsync(string[] args)
        {
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
            if (settings.ShowHelp)
            {
                await Console.Out.WriteAsync(CommandLine.Help());
                return ExitOk;
            }
            if (settings.ShowVersion)
            {
                await Console.Out.WriteLineAsync($"netswapd {typeof(Daemon).Assembly.GetName().Version?.ToString(3)}");
                return ExitOk;
            }

            var level = settings.Verbosity switch
            {
                < 0 => LogLevel.Warning,
                0 => LogLevel.Information,
                1 => LogLevel.Debug,
                _ => LogLevel.Trace,
            };
            using var loggerFactory = LoggerFactory.Create(b => b.SetMinimumLevel(level).AddProvider(new StderrLoggerProvider(level)));
            var logger = loggerFactory.CreateLogger("netswapd");

            FileExportCatalog catalog;
            try
            {
                catalog = new FileExportCatalog(settings.Exports, settings.DefaultExport);
            }
            catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
            {
                DaemonLog.StartFailed(logger, e.Message);
                return ExitFailure;
            }
            using var _ = catalog;
            foreach (var export in catalog.List(new ConnectionInfo(0, "")).OfType<FileExport>())
            {
                ServerLog.ExportConfigured(logger, export.Name, export.Path, export.Size, export.IsReadOnly ? "read-only" : "read-write");
            }
            if (settings.CheckConfig)
            {
                await Console.Out.WriteLineAsync($"configuration valid: {catalog.Count} file exports, listening on {string.Join(", ", settings.EffectiveListen)}");
                return ExitOk;
            }

            var context = new NbdServerContext(catalog, settings.Server, logger);
            ServerLog.Limits(logger, settings.Server.HandshakeTimeout, settings.Server.MaxRequestsInFlight, settings.Server.ConnectionBufferBytes, settings.Server.ShutdownTimeout);
            await using var server = new NbdServer(context);
            if (!BindListeners(server, settings, logger))
            {
                return ExitFailure;
            }

            var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.TrySetResult(); });
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.TrySetResult(); });
            DaemonLog.Ready(logger, Environment.ProcessId);
            await stop.Task;
            await server.StopAsync();
            return ExitOk;
        }

        internal static DaemonSettings LoadSettings(IReadOnlyList<string> args)
        {
            var parsed = CommandLine.Parse(args);
            var settings = new DaemonSettings();
            var configPath = parsed.LastOrDefault(p => p.Spec.Name == "config").Value;
            if (parsed.Any(p => p.Spec.Name is "help" or "version"))
            {
                CommandLine.Apply(settings, parsed);
                return settings;
            }
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
    }
}
