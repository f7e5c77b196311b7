using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using NetSwap.Protocol.Nbd;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Server;

/// <summary>
/// A connection "waiting on storage" (a request inside a pread/pwrite that the disk holds up) cannot be cut in the
/// middle of that call: the area stays with it until the call returns. These tests pin the bounds that hold all the
/// same: once its client is gone, the connection ends as soon as storage gives the request back; and a stop ends within
/// the shutdown timeout plus the closing grace even when storage never gives it back.
/// </summary>
[Collection(nameof(TimingCollection))]
public class StorageWaitTests
{
    private const int Large = 128 * 1024;

    [Fact]
    public async Task ClientReset_WhileItsWriteIsInStorage_ConnectionEndsAsSoonAsStorageReturns()
    {
        using var storage = new HeldStorage(TimeSpan.FromSeconds(30));
        await using var server = ServerHarness.Start(storage.Catalog);
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(IPAddress.Loopback, server.Port);
        await using var client = new TestNbdClient(new NetworkStream(socket, ownsSocket: true));
        await client.StartAsync();
        await client.GoAsync("faulty");
        // 128 KiB: more than a write that may run on the event loop, so it waits on the thread pool and the receive
        // loop goes on reading (an inline one would hold the loop itself until storage returns).
        await client.SendRequestAsync(NbdCommand.Write, 0, Large, payload: new byte[Large]);
        // Two more behind it, so that replies are owed to a client that is no longer there.
        await client.SendRequestAsync(NbdCommand.Read, 0, 65536);
        await client.SendRequestAsync(NbdCommand.Flush, 0, 0);
        Assert.True(await storage.EnteredAsync(), "the write never reached storage");

        socket.LingerState = new LingerOption(true, 0);
        socket.Close();   // RST: the client is gone for good
        // The receive loop sees the reset as an error or as an end of stream (which one depends on when epoll reports
        // it): either way storage still holds the write, and the connection (so any area) must wait for it, not be
        // torn from under it.
        await Task.Delay(500);
        Assert.Equal(1, server.Server.ConnectionCount);

        var returned = Stopwatch.StartNew();
        storage.Release();
        while (server.Server.ConnectionCount != 0 && returned.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(10);
        }
        Assert.Equal(0, server.Server.ConnectionCount);
        Assert.True(returned.Elapsed < TimeSpan.FromSeconds(2), $"the connection ended {returned.Elapsed.TotalSeconds:F1} s after storage returned");
        Assert.True(await server.Log.WaitForAsync("closed after"), "no close line");
    }

    [Fact]
    public async Task Stop_WithStorageThatNeverReturns_EndsWithinShutdownTimeoutAndClosingGrace()
    {
        using var storage = new HeldStorage(TimeSpan.FromSeconds(60));
        await using var server = ServerHarness.Start(storage.Catalog, o => o.ShutdownTimeout = TimeSpan.FromSeconds(1));
        try
        {
            await using var client = await server.ConnectAsync();
            await client.StartAsync();
            await client.GoAsync("faulty");
            await client.SendRequestAsync(NbdCommand.Write, 0, Large, payload: new byte[Large]);
            Assert.True(await storage.EnteredAsync(), "the write never reached storage");

            var stopping = Stopwatch.StartNew();
            await server.Server.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));
            // 1 s for requests in flight, 1 s for cut connections to end, and slack for a busy test host.
            Assert.True(stopping.Elapsed < TimeSpan.FromSeconds(4), $"the stop took {stopping.Elapsed.TotalSeconds:F1} s");
            Assert.True(stopping.Elapsed >= TimeSpan.FromSeconds(1.9), $"the stop did not wait for the write ({stopping.Elapsed.TotalSeconds:F1} s)");
            Assert.True(server.Log.Contains("did not end within"), "the stuck connection was not reported");
        }
        finally
        {
            storage.Release();
        }
    }
}
