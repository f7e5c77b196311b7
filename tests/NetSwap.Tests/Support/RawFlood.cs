using System.Diagnostics;
using System.Net.Sockets;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Tests.Support;

/// <summary>A raw client that stops reading replies (issue 14, item 2): its requests go on until the server stops taking them.</summary>
public static class RawFlood
{
    /// <summary>
    /// Sends WRITEs (or READs) without reading a reply until the server stops taking them; returns how many. With
    /// <paramref name="cutMayEndIt"/>, the server cutting the connection while requests still go out ends the flood
    /// too (a short send-timeout can run out before the server stops reading requests on a busy host).
    /// </summary>
    public static async Task<int> WithoutReadingAsync(Socket socket, NbdCommand command, bool cutMayEndIt = false)
    {
        var payload = command == NbdCommand.Write ? 4096 : 0;
        var message = new byte[NbdRequest.Size + payload];
        var sent = 0;
        socket.Blocking = false;
        var idle = Stopwatch.StartNew();
        while (idle.ElapsedMilliseconds < 1000)
        {
            new NbdRequest(0, command, (ulong)sent + 1, (ulong)(sent % 1024) * 4096, 4096).Write(message);
            var done = 0;
            while (done < message.Length && idle.ElapsedMilliseconds < 1000)
            {
                try
                {
                    done += socket.Send(message, done, message.Length - done, SocketFlags.None);
                    idle.Restart();
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
                {
                    await Task.Delay(10);
                }
                catch (SocketException e) when (cutMayEndIt && e.SocketErrorCode is SocketError.ConnectionReset
                    or SocketError.ConnectionAborted or SocketError.Shutdown)
                {
                    socket.Blocking = true;
                    return sent;
                }
            }
            sent++;
        }
        socket.Blocking = true;
        return sent;
    }
}
