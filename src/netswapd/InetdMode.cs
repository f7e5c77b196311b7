using Microsoft.Extensions.Logging;
using NetSwap.Daemon.Logging;
using NetSwap.Server.Hosting;

namespace NetSwap.Daemon;

/// <summary>`netswapd --inetd`: inetd or xinetd ("nowait") passes one connection on standard input; serve it and exit.</summary>
internal static class InetdMode
{
    public static async Task<int> ServeAsync(NbdServer server, ILogger logger)
    {
        if (!SystemdActivation.IsSocket(0) || SystemdActivation.IsListening(0))
        {
            DaemonLog.StartFailed(logger, "--inetd needs a connected socket on standard input: run from inetd in 'nowait' mode (one process per connection), or use socket activation without --inetd");
            return Daemon.ExitFailure;
        }
        var socket = new System.Net.Sockets.Socket(new System.Net.Sockets.SafeSocketHandle(0, ownsHandle: false));
        await server.Serve(socket);
        return Daemon.ExitOk;
    }
}
