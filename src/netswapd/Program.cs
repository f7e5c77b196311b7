using Microsoft.Extensions.Logging;
using NetSwap.Daemon;
using NetSwap.Daemon.Configuration;

try
{
    return await Daemon.RunAsync(args);
}
catch (Exception e)
{
    // Last resort: whatever a check above missed ends in one line and exit 1, never a stack trace.
    await Console.Error.WriteLineAsync($"netswapd: {e.GetType().Name}: {e.Message}");
    return 1;
}

namespace NetSwap.Daemon
{
    using NetSwap.Daemon.Logging;
    using NetSwap.Server.Access;
    using NetSwap.Server.Tls;
    using NetSwap.Server.Exports;
    using NetSwap.Server.Hosting;

    internal static partial class Daemon
    {
        public const int ExitOk = 0;
        public const int ExitFailure = 1;
        public const int ExitUsage = 2;

        public static async Task<int> RunAsync(string[] args)
        {
            // `status`, --help, --version and shell completion ([suggest]) are System.CommandLine's to run; what is
            // left is the daemon itself.
            var (root, options) = CommandLine.Build();
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
                // The parse above is the daemon's too: its settings are read from it, not from a second parse.
                settings = LoadSettings(CommandLine.Settings(args, parse, options));
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

            using var loggerFactory = DaemonLog.CreateFactory(settings);
            var logger = loggerFactory.CreateLogger("netswapd");
            if (!TryBuild(settings, logger, out var catalog, out var policy, out var tls))
            {
                return ExitFailure;
            }
            using var ownedCatalog = catalog;
            if (settings.CheckConfig)
            {
                return await CheckConfigCommand.ReportAsync(settings, catalog, tls);
            }
            LogPolicy(logger, policy);
            LogTls(logger, tls);
            var context = new NbdServerContext(catalog, settings.Server, logger, policy) { Tls = tls };
            ServerLog.Limits(logger, settings.Server.HandshakeTimeout, settings.Server.MaxRequestsInFlight, settings.Server.ConnectionBufferBytes, settings.Server.PayloadMemoryBytes, settings.Server.ShutdownTimeout,
                settings.Server.SendTimeout, settings.Server.PayloadTimeout);
            await using var server = new NbdServer(context);

            if (settings.Inetd)
            {
                return await InetdMode.ServeAsync(server, logger);
            }
            return await DaemonHost.RunAsync(args, settings, catalog, context, server, logger);
        }
    }
}
