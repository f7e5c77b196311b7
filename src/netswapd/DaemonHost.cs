using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using NetSwap.Daemon.Configuration;
using NetSwap.Daemon.Logging;
using NetSwap.Server.Exports;
using NetSwap.Server.Hosting;
using NetSwap.Server.Transport;

namespace NetSwap.Daemon;

/// <summary>
/// The daemon as a service (standalone or socket-activated): its listeners (the ones systemd passed, or its own),
/// the oldstyle listener, discovery, the control socket, and the signals, until SIGTERM or SIGINT stops it.
/// </summary>
internal static class DaemonHost
{
    public static async Task<int> RunAsync(string[] args, DaemonSettings settings, ExportCatalog catalog, NbdServerContext context, NbdServer server, ILogger logger)
    {
        var startedAt = DateTimeOffset.UtcNow;
        var (activated, connected, datagram) = SystemdActivation.TakeSockets();
        foreach (var socket in activated)
        {
            server.StartListening(socket);
        }
        if ((activated.Count == 0 && connected.Count == 0) || settings.Listen is not null)
        {
            if (!BindListeners(server, settings, logger))
            {
                return Daemon.ExitFailure;
            }
        }
        foreach (var endpoint in settings.OldstyleListen)
        {
            if (catalog.Swap is null)
            {
                DaemonLog.StartFailed(logger, "--oldstyle-listen serves swap areas, but swap is off");
                return Daemon.ExitFailure;
            }
            try
            {
                server.StartListening(SocketSetup.Listen(endpoint), oldstyle: true);
            }
            catch (System.Net.Sockets.SocketException e)
            {
                DaemonLog.StartFailed(logger, $"cannot listen on {endpoint}: {e.Message}");
                return Daemon.ExitFailure;
            }
        }

        NetSwap.Server.Discovery.DiscoveryResponder? discovery = null;
        if (settings.Discovery && catalog.Swap is not null && server.Listeners.Count > 0)
        {
            var name = Environment.MachineName;
            NetSwap.Protocol.Discovery.DiscoveryReply? Answer(System.Net.IPAddress client, NetSwap.Protocol.Discovery.DiscoveryProbe probe) =>
                NetSwap.Server.Discovery.DiscoveryAnswer.ListenerPort(server.Listeners, client) is { } nbdPort
                    ? NetSwap.Server.Discovery.DiscoveryAnswer.Build(client, probe, server, catalog, nbdPort, Daemon.Version, name)
                    : null;
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
                () => ControlServer.Snapshot(server, catalog, Daemon.Version, startedAt), logger);
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
        return Daemon.ExitOk;
    }

    /// <summary>
    /// SIGHUP: reads the configuration again and swaps in the new access rules, limits and client list; connected
    /// clients keep their connections. A broken configuration is refused whole and the one in force stays.
    /// </summary>
    private static void Reload(string[] args, NbdServerContext context, ILogger logger)
    {
        try
        {
            var settings = Daemon.LoadSettings(args);
            var policy = Daemon.BuildPolicy(settings);
            var tls = Daemon.BuildTls(settings);
            context.Reload(policy, tls);
            DaemonLog.Reloaded(logger, settings.ConfigPath ?? "(no config file)");
            Daemon.LogPolicy(logger, policy);
            Daemon.LogTls(logger, tls);
        }
        catch (Exception e)
        {
            // Whatever is wrong with the new configuration, the one in force stays (and the process with it).
            DaemonLog.ReloadRejected(logger, e.Message);
        }
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
