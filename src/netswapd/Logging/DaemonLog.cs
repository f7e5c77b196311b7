using Microsoft.Extensions.Logging;
using NetSwap.Server.Tls;

namespace NetSwap.Daemon.Logging;

internal static partial class DaemonLog
{
    /// <summary>
    /// The daemon's loggers at the settings' verbosity: stderr (the journal under systemd), or syslog when asked, and
    /// by default in inetd mode when stderr is the client's socket, where a log line would corrupt the protocol.
    /// </summary>
    public static ILoggerFactory CreateFactory(Configuration.DaemonSettings settings)
    {
        var level = settings.Verbosity switch
        {
            < 0 => LogLevel.Warning,
            0 => LogLevel.Information,
            1 => LogLevel.Debug,
            _ => LogLevel.Trace,
        };
        var syslog = settings.LogTarget == "syslog" || (settings.LogTarget == "auto" && settings.Inetd && SystemdActivation.IsSocket(2));
        return LoggerFactory.Create(b => b.SetMinimumLevel(level)
            .AddProvider(syslog ? new SyslogLoggerProvider(level) : new StderrLoggerProvider(level)));
    }

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
