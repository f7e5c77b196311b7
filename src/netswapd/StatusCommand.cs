using System.CommandLine;
using System.Net.Sockets;
using System.Text;
using NetSwap.Protocol.Control;

namespace NetSwap.Daemon;

/// <summary>`netswapd status [--json] [--control-socket PATH]`: asks the running daemon for its clients and swap areas.</summary>
internal static class StatusCommand
{
    /// <summary>
    /// Where the control socket is when --control-socket does not say: in the runtime directory systemd gives the
    /// service (RUNTIME_DIRECTORY, /run/netswap for the packaged unit, whichever user it runs as), else
    /// /run/netswap for root, else a per-user path. `netswapd status` run from a root shell looks in /run/netswap too.
    /// </summary>
    public static string DefaultSocketPath()
    {
        if (SystemdActivation.Directory("RUNTIME_DIRECTORY") is { } runtimeDirectory)
        {
            return Path.Combine(runtimeDirectory, "netswapd.sock");
        }
        if (NetSwap.Server.Exports.Swap.SwapDirectory.IsRoot)
        {
            return "/run/netswap/netswapd.sock";
        }
        var runtime = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
        return string.IsNullOrEmpty(runtime)
            ? $"/tmp/netswap-{Environment.UserName}/netswapd.sock"
            : Path.Combine(runtime, "netswap", "netswapd.sock");
    }

    /// <summary>The `status` subcommand; its action asks the daemon (tests may pass another).</summary>
    public static Command Create(Func<ParseResult, CancellationToken, Task<int>>? action = null)
    {
        var json = new Option<bool>("--json") { Description = "The answer as JSON (clients, swap areas, sizes, bytes moved)." };
        var socket = new Option<string>("--control-socket")
        {
            Description = "The daemon's control socket. Default: /run/netswap/netswapd.sock as root (the packaged service's RuntimeDirectory), else a per-user path.",
            HelpName = "PATH",
        };
        var command = new Command("status", "Ask the netswapd running on this host, through its control socket, for its clients and swap areas.") { json, socket };
        command.SetAction(action ?? ((parse, _) => RunAsync(parse.GetValue(json), parse.GetValue(socket) ?? DefaultSocketPath())));
        return command;
    }

    public static async Task<int> RunAsync(bool json, string path)
    {
        string reply;
        try
        {
            reply = await ServerStatusText.QueryAsync(path);
        }
        catch (Exception e) when (e is SocketException or IOException or OperationCanceledException)
        {
            await Console.Error.WriteLineAsync($"netswapd status: cannot reach the daemon at {path}: {e.Message}");
            return 1;
        }
        if (json)
        {
            await Console.Out.WriteAsync(reply);
            return 0;
        }
        var status = ControlJsonContext.Deserialize(reply);
        if (status is null)
        {
            await Console.Error.WriteLineAsync("netswapd status: the daemon sent an unreadable answer");
            return 1;
        }
        await Console.Out.WriteAsync(ServerStatusText.Format(status));
        return 0;
    }

}
