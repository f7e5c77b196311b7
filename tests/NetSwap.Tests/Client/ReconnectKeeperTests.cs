using System.Net;
using System.Net.Sockets;
using NetSwap.Client.Attach;
using NetSwap.Client.Kernel;
using NetSwap.Protocol.Nbd;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Client;

/// <summary>
/// `netswap keep` against a real netswapd swap export: after a connection dies it opens the same area again and
/// hands a live transmission-phase socket over (here to the test, in the kernel's place); it refuses a fresh area, so
/// that the kernel never reads zeros where it swapped pages; and it gives up after its time.
/// </summary>
public class ReconnectKeeperTests
{
    private const long MiB = 1L << 20;

    /// <summary>In the kernel's place: takes over the socket (a duplicate of the descriptor, as the kernel takes a
    /// reference) and reports one dead link when asked.</summary>
    private sealed class KernelDouble(uint index) : IKernelLink
    {
        public bool Dead { get; set; }
        public bool Connected { get; set; } = true;
        public List<Socket> HandedOver { get; } = [];

        public uint? WaitForLinkDead(TimeSpan timeout)
        {
            if (Dead)
            {
                Dead = false;
                return index;
            }
            Thread.Sleep(10);
            return null;
        }

        public void HandOver(uint device, int socket)
        {
            Assert.Equal(index, device);
            HandedOver.Add(new Socket(new SafeSocketHandle(Dup(socket), ownsHandle: true)));
        }

        public bool DeviceConnected(uint device) => Connected;

        [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "dup")]
        private static extern nint Dup(int fd);
    }

    private static async Task<(TestNbdClient Client, KeptExport Export)> AttachAsync(ServerHarness server, string export)
    {
        var client = await server.ConnectAsync();
        await client.StartAsync();
        await client.GoAsync(export, structured: false);
        var first = (await client.RequestAsync(NbdCommand.Read, 0, 4096)).Data;
        return (client, new KeptExport(3, new IPEndPoint(IPAddress.Loopback, server.Port), export, client.ExportSize, client.Flags, first));
    }

    [Fact]
    public async Task DeadConnection_IsReplaced_WithTheSameArea_InTransmission()
    {
        await using var fs = await TmpfsMount.CreateAsync(128 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path, o => o.Grace = TimeSpan.FromSeconds(30));
        var (client, export) = await AttachAsync(server, "swap/keeper-a:16M");
        var pages = new byte[64 * 1024];
        new Random(7).NextBytes(pages);
        Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Write, 5 * (ulong)MiB, (uint)pages.Length, payload: pages)).Error);
        await client.DisposeAsync();   // the connection dies: no NBD_CMD_DISC
        Assert.True(await server.Log.WaitForAsync("after an unclean disconnect"));

        var kernel = new KernelDouble(3) { Dead = true };
        var lines = new List<string>();
        var keeper = new ReconnectKeeper(export, kernel, (_, line) => lines.Add(line)) { Memory = () => "RSS 42 kB" };
        Assert.True(keeper.Reconnect(CancellationToken.None));
        // The report says what reconnecting left the keeper with (in the guest: whether it needed fresh memory).
        Assert.Contains(lines, l => l.Contains("reconnected to 127.0.0.1", StringComparison.Ordinal) && l.EndsWith("; RSS 42 kB", StringComparison.Ordinal));
        Assert.True(server.Log.Contains("reattached after"));

        // What the kernel got is a connection past the handshake, on the area with the pages written before the cut.
        using var socket = Assert.Single(kernel.HandedOver);
        await using var resumed = new TestNbdClient(new NetworkStream(socket, ownsSocket: false));
        var read = await resumed.RequestAsync(NbdCommand.Read, 5 * (ulong)MiB, (uint)pages.Length);
        Assert.Equal(NbdError.None, read.Error);
        Assert.Equal(pages, read.Data);
        await resumed.SendRequestAsync(NbdCommand.Disc, 0, 0);
        Assert.True(await server.Log.WaitForAsync("destroyed (client disconnected)"));
    }

    [Fact]
    public async Task AfterTheGracePeriod_AFreshArea_IsRefused_AndDestroyedAtOnce()
    {
        await using var fs = await TmpfsMount.CreateAsync(128 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path, o => o.Grace = TimeSpan.FromSeconds(0.5));
        var (client, export) = await AttachAsync(server, "swap/keeper-b:16M");
        await client.DisposeAsync();
        Assert.True(await server.Log.WaitForAsync("destroyed (grace period over)", TimeSpan.FromSeconds(5)));

        var kernel = new KernelDouble(3);
        var lines = new List<string>();
        var keeper = new ReconnectKeeper(export, kernel, (_, line) => lines.Add(line));
        Assert.False(keeper.Reconnect(CancellationToken.None));
        Assert.Empty(kernel.HandedOver);
        Assert.Contains(lines, l => l.Contains("starts with another swap header", StringComparison.Ordinal) && l.Contains("swap on this device will fail", StringComparison.Ordinal));
        // The fresh area it was offered is not left waiting out a grace period.
        Assert.True(await server.Log.WaitForAsync("destroyed (client disconnected)"));
        Assert.Equal(0, server.Registry.Committed);
    }

    [Fact]
    public async Task UnreachableServer_IsRetried_UntilTheTimeRunsOut()
    {
        // A port nobody listens on: every attempt is refused.
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        var port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        var export = new KeptExport(0, new IPEndPoint(IPAddress.Loopback, port), "swap/keeper-c", 16 * MiB, NbdTransmissionFlags.HasFlags, new byte[4096]);
        var lines = new List<string>();
        var keeper = new ReconnectKeeper(export, new KernelDouble(0), (_, line) => lines.Add(line))
        {
            ReconnectFor = TimeSpan.FromSeconds(1.5),
            RetryInterval = TimeSpan.FromMilliseconds(200),
        };
        var started = System.Diagnostics.Stopwatch.StartNew();
        Assert.False(keeper.Reconnect(CancellationToken.None));
        Assert.True(started.Elapsed >= TimeSpan.FromSeconds(1.5));
        Assert.Contains(lines, l => l.Contains("could not reconnect", StringComparison.Ordinal) && l.Contains("Connection refused", StringComparison.Ordinal));
        // The same failure is logged once, not once per attempt.
        Assert.Single(lines, l => l.Contains("reconnect attempt", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Run_Reconnects_OnItsDevicesEvent_AndEnds_WhenTheDeviceIsDisconnected()
    {
        await using var fs = await TmpfsMount.CreateAsync(128 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path, o => o.Grace = TimeSpan.FromSeconds(30));
        var (client, export) = await AttachAsync(server, "swap/keeper-d:16M");
        await client.DisposeAsync();
        Assert.True(await server.Log.WaitForAsync("after an unclean disconnect"));
        var kernel = new KernelDouble(3) { Dead = true };
        var keeper = new ReconnectKeeper(export, kernel, (_, _) => { }) { CheckInterval = TimeSpan.FromMilliseconds(10) };
        var running = Task.Run(() => keeper.Run(CancellationToken.None));
        await WaitUntilAsync(() => kernel.HandedOver.Count == 1);
        kernel.Connected = false;
        Assert.Equal(0, await running.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(1, keeper.Reconnects);
        kernel.HandedOver[0].Dispose();
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        for (var i = 0; i < 500 && !condition(); i++)
        {
            await Task.Delay(20);
        }
        Assert.True(condition());
    }
}
