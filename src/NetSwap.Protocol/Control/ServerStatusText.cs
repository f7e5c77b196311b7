using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace NetSwap.Protocol.Control;

/// <summary>The control socket's client side, and the status document as administrators read it.</summary>
public static class ServerStatusText
{
    /// <summary>Sends <c>status</c> to the daemon's control socket and returns its JSON answer.</summary>
    public static async Task<string> QueryAsync(string path)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), timeout.Token);
        await socket.SendAsync("status\n"u8.ToArray(), timeout.Token);
        using var memory = new MemoryStream();
        var buffer = new byte[8192];
        int n;
        while ((n = await socket.ReceiveAsync(buffer, timeout.Token)) > 0)
        {
            memory.Write(buffer, 0, n);
        }
        return Encoding.UTF8.GetString(memory.ToArray());
    }

    public static string Format(ServerStatus status)
    {
        var text = new StringBuilder();
        var c = CultureInfo.InvariantCulture;
        text.AppendLine(c, $"netswapd {status.Version}, up since {status.StartedAt:u}");
        text.AppendLine(c, $"{"CONN",-6}{"CLIENT",-42}{"EXPORT",-24}{"SIZE",10}{"RESERVED",10}{"READ",10}{"WRITTEN",10}  CONNECTED SINCE");
        foreach (var client in status.Clients)
        {
            text.AppendLine(c, $"{client.Connection,-6}{client.Address,-42}{client.Export,-24}{Bytes(client.Size),10}{Bytes(client.ReservedBytes),10}{Bytes(client.BytesRead),10}{Bytes(client.BytesWritten),10}  {client.ConnectedSince:u}");
        }
        if (status.Clients.Count == 0)
        {
            text.AppendLine("(no clients)");
        }
        if (status.Swap is { } swap)
        {
            var waiting = swap.Areas.Where(a => a.State == "grace").ToList();
            if (waiting.Count > 0)
            {
                text.AppendLine("Swap areas waiting for their client to reconnect:");
                text.AppendLine(c, $"{"AREA",-6}{"CLIENT",-42}{"EXPORT",-24}{"SIZE",10}  DESTROYED AT");
                foreach (var area in waiting)
                {
                    text.AppendLine(c, $"{area.Id,-6}{area.Client,-42}{area.Export,-24}{Bytes(area.Size),10}  {area.GraceDeadline:u}");
                }
            }
            var budget = swap.Budget > 0 ? $"of a {Bytes(swap.Budget)} budget" : "(no budget set)";
            text.AppendLine(c, $"Swap: {swap.Areas.Count} areas, {Bytes(swap.InUse)} in use {budget}; {swap.Directory}: {Bytes(swap.FileSystemAvailable)} free of {Bytes(swap.FileSystemTotal)}");
        }
        return text.ToString();
    }

    private static string Bytes(long value) => value switch
    {
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{value / (double)(1L << 30):0.#}G"),
        >= 1L << 20 => string.Create(CultureInfo.InvariantCulture, $"{value / (double)(1L << 20):0.#}M"),
        >= 1L << 10 => string.Create(CultureInfo.InvariantCulture, $"{value / (double)(1L << 10):0.#}K"),
        _ => value.ToString(CultureInfo.InvariantCulture),
    };
}
