using System.Globalization;
using System.Text.Json;
using NetSwap.Protocol.Control;

namespace NetSwap.Client.Commands;

/// <summary>`netswap status` (the swap attached here) and `netswap server-status` (a netswapd on this host).</summary>
internal static class StatusCommand
{
    public static readonly CommandSpec Spec = new("status", "",
        "The swap attached here: device, server, size, used, encrypted.",
        [new("--json", null, "Write JSON instead of text.")],
        reader =>
        {
            var json = reader.Flag("--json");
            reader.EnsureConsumed();
            return () => Task.FromResult(Run(json));
        });

    public static readonly CommandSpec ServerStatusSpec = new("server-status", "",
        "Ask a netswapd on this host for its clients and swap areas.",
        [
            new("--json", null, "Write JSON instead of text."),
            new("--control-socket", "PATH", "netswapd's control socket. Default: /run/netswap/netswapd.sock."),
        ],
        reader =>
        {
            var json = reader.Flag("--json");
            var path = reader.Value("--control-socket") ?? "/run/netswap/netswapd.sock";
            reader.EnsureConsumed();
            return () => ServerStatusAsync(json, path);
        });

    private static int Run(bool json)
    {
        var attacher = AttachCommand.Attacher();
        var usage = attacher.SwapUsage();
        var rows = attacher.Attached().Select(a =>
        {
            var resolved = new FileInfo(a.Target).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? a.Target;
            var used = usage.GetValueOrDefault(a.Target, usage.GetValueOrDefault(resolved, -1));
            return (Swap: a, Used: used);
        }).ToList();
        var output = Console.Out;
        if (json)
        {
            var list = rows.Select(r => new SwapJson(r.Swap.Device, r.Swap.Target, r.Swap.Server, r.Swap.Export, r.Swap.Size, r.Used, r.Used >= 0, r.Swap.Encrypted)).ToList();
            output.WriteLine(JsonSerializer.Serialize(list, ClientJsonContext.Default.ListSwapJson));
            return 0;
        }
        if (rows.Count == 0)
        {
            output.WriteLine("no network swap attached");
            return 0;
        }
        output.WriteLine($"{"DEVICE",-12}{"SWAP ON",-26}{"SERVER",-28}{"SIZE",10}{"USED",10}  ENCRYPTED");
        foreach (var (a, used) in rows)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{a.Device,-12}{a.Target,-26}{a.Server,-28}{a.Size >> 20,9}M{(used < 0 ? "off" : (used >> 20) + "M"),10}  {(a.Encrypted ? "yes" : "no")}"));
        }
        return 0;
    }

    private static async Task<int> ServerStatusAsync(bool json, string path)
    {
        var reply = await ServerStatusText.QueryAsync(path);
        if (json)
        {
            await Console.Out.WriteAsync(reply);
            return 0;
        }
        var status = ControlJsonContext.Deserialize(reply) ?? throw new FormatException("unreadable answer from netswapd");
        await Console.Out.WriteAsync(ServerStatusText.Format(status));
        return 0;
    }
}
