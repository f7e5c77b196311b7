using System.Net;
using System.Net.Sockets;
using NetSwap.Server.Transport;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Server;

/// <summary>The listening socket: one daemon per address and port.</summary>
public class ListenTests
{
    [Fact]
    public void ASecondListenerOnTheSamePort_IsRefused_NotSharedWith()
    {
        using var first = SocketSetup.Listen(new IPEndPoint(IPAddress.Loopback, 0));
        var taken = (IPEndPoint)first.LocalEndPoint!;
        // With SO_REUSEPORT (what .NET's ReuseAddress also sets on Linux) this would succeed, and the kernel would
        // hand every other connection to the second daemon.
        var error = Assert.Throws<SocketException>(() => SocketSetup.Listen(taken).Dispose());
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
    }

    [Fact]
    public async Task APortLeftInTimeWait_CanBeListenedOnAgainAtOnce()
    {
        // A port below the ephemeral range (see Ports): what holds it when listening again must be the TIME_WAIT.
        IPEndPoint endpoint;
        using (var listener = Ports.BindBelowEphemeralRange(e => SocketSetup.Listen(e)))
        {
            endpoint = (IPEndPoint)listener.LocalEndPoint!;
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await client.ConnectAsync(endpoint);
            using var accepted = await listener.AcceptAsync();
            // The server side closes first: its end of the connection stays in TIME_WAIT on this port.
            accepted.Close();
            await Task.Delay(50);
        }
        // The client's FIN (at its dispose) completes the close: this side is in TIME_WAIT now, or the test proves nothing.
        var timeWait = "";
        for (var tries = 0; tries < 100 && timeWait.Length == 0; tries++)
        {
            timeWait = (await ExternalTool.RunOkAsync("ss", "-Htan", "state", "time-wait", "sport", "=", $":{endpoint.Port}")).Trim();
            if (timeWait.Length == 0)
            {
                await Task.Delay(20);
            }
        }
        Assert.False(timeWait.Length == 0, $"no TIME_WAIT on port {endpoint.Port}");
        using var again = SocketSetup.Listen(endpoint);
        Assert.Equal(endpoint.Port, ((IPEndPoint)again.LocalEndPoint!).Port);
    }
}
