using NetSwap.Daemon.Configuration;
using NetSwap.Server.Exports;
using NetSwap.Server.Tls;

namespace NetSwap.Daemon;

/// <summary>
/// `netswapd --check-config`: everything a start would build has been built (exports, swap directory, access rules,
/// client list, TLS credentials and CRL) without a failure; say what would be served, and exit 0 without serving.
/// </summary>
internal static class CheckConfigCommand
{
    public static async Task<int> ReportAsync(DaemonSettings settings, ExportCatalog catalog, TlsConfiguration tls)
    {
        await Console.Out.WriteLineAsync($"configuration valid: {catalog.Files.Count} file exports, swap {(catalog.Swap is null ? "off" : "on")}, TLS {tls.Mode.ToString().ToLowerInvariant()}, listening on {string.Join(", ", settings.EffectiveListen)}");
        return Daemon.ExitOk;
    }
}
