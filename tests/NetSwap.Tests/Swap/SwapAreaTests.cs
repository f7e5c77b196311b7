using System.Diagnostics;
using NetSwap.Protocol.Nbd;
using NetSwap.Protocol.Swap;
using NetSwap.Server.Exports.Swap;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Swap;

/// <summary>
/// Swap on demand in process, on a private tmpfs so that space is measured exactly: an area per connection, of the
/// size asked, gone when the client goes, kept for a reconnect with a token, refused with the limit named.
/// </summary>
public class SwapAreaTests
{
    private const long MiB = 1L << 20;

    private static async Task<TestNbdClient> OpenAsync(ServerHarness server, string export, string? from = null, bool structured = true)
    {
        var client = from is null ? await server.ConnectAsync() : await server.ConnectFromAsync(from);
        await client.StartAsync();
        await client.GoAsync(export, structured);
        return client;
    }

    private static async Task DisconnectAsync(TestNbdClient client)
    {
        await client.SendRequestAsync(NbdCommand.Disc, 0, 0);
        Assert.True(await client.IsClosedAsync(TimeSpan.FromSeconds(5)), "the server did not close after NBD_CMD_DISC");
        await client.DisposeAsync();
    }

    private static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    [Fact]
    public async Task Connect_CreatesAnAreaOfTheAskedSize_Disconnect_GivesTheSpaceBack()
    {
        await using var fs = await TmpfsMount.CreateAsync(512 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path);
        var before = fs.Used;
        var client = await OpenAsync(server, "swap:64M");
        Assert.Equal((ulong)(64 * MiB), client.ExportSize);
        Assert.True(fs.Used - before >= 64 * MiB, "reserve mode allocates the whole area at connect");
        Assert.Empty(Directory.EnumerateFileSystemEntries(fs.Path));   // no name on disk
        Assert.True((client.Flags & NbdTransmissionFlags.CanMultiConn) == 0, "multi-conn is never advertised for swap");

        // A fresh area reads as zeros but for its swap header.
        var page = (await client.RequestAsync(NbdCommand.Read, 0, 4096)).Data;
        Assert.True(SwapHeader.TryRead(page, out var lastPage, out _, out var label));
        Assert.Equal((64 * MiB / 4096) - 1, lastPage);
        Assert.Equal("netswap", label);
        var rest = await client.RequestAsync(NbdCommand.Read, 4096, (uint)(1 * MiB));
        Assert.True(rest.Data.AsSpan().IndexOfAnyExcept((byte)0) < 0);

        var started = Stopwatch.StartNew();
        await DisconnectAsync(client);
        // At once, not after a keepalive or grace period (tens of seconds): 5 s leaves room for a busy test host.
        Assert.True(await fs.WaitForUsedAsync(u => u <= before, TimeSpan.FromSeconds(5)), $"space not back after 5 s: {fs.Used - before} B still used");
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(6));
        Assert.True(await server.Log.WaitForAsync("destroyed (client disconnected), 67108864 B freed"));
        Assert.Equal(0, server.Registry.Committed);
    }

    [Fact]
    public async Task AbruptClose_WithoutToken_DestroysAtOnce()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path);
        var before = fs.Used;
        var client = await OpenAsync(server, "swap");
        Assert.Equal((ulong)(16 * MiB), client.ExportSize);
        await client.RequestAsync(NbdCommand.Write, 8192, 4096, payload: Pattern(4096, 1));
        await client.DisposeAsync();   // as a killed client: no NBD_CMD_DISC
        Assert.True(await fs.WaitForUsedAsync(u => u <= before, TimeSpan.FromSeconds(5)));
        Assert.True(await server.Log.WaitForAsync("no token, no grace"));
    }

    [Fact]
    public async Task ClientVanishingDuringGo_LeaksNoArea()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path);
        var before = fs.Used;
        for (var i = 0; i < 20; i++)
        {
            var client = await server.ConnectAsync();
            await client.StartAsync();
            var request = new NbdInfoRequest("swap:8M", [NbdInfoType.Name, NbdInfoType.Description, NbdInfoType.BlockSize]);
            var data = new byte[request.SerializedLength];
            request.Write(data);
            await client.SendOptionAsync(NbdOption.Go, data);
            // Reset at once (SO_LINGER 0): the server's replies hit a dead socket, or its next read does.
            var socket = ((System.Net.Sockets.NetworkStream)client.Stream).Socket;
            socket.LingerState = new System.Net.Sockets.LingerOption(true, 0);
            await client.DisposeAsync();
        }
        // Every connection was accepted (each got its greeting), but the server may not have read the last GOs yet:
        // Committed can read 0 before their areas exist. Wait until all connections have ended and their areas with them.
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while ((server.Server.ConnectionCount != 0 || server.Registry.Committed != 0 || server.Registry.Snapshot().Count != 0)
               && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }
        Assert.Equal(0, server.Server.ConnectionCount);
        Assert.Equal(0, server.Registry.Committed);
        Assert.Empty(server.Registry.Snapshot());
        Assert.True(await fs.WaitForUsedAsync(u => u <= before, TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Reconnect_WithTheSameToken_WithinGrace_GetsTheSameBytes_AfterGrace_AFreshArea()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path, o => o.Grace = TimeSpan.FromSeconds(1.5));
        var data = Pattern(256 * 1024, 42);
        var first = await OpenAsync(server, "swap/pc07:32M");
        Assert.Equal(NbdError.None, (await first.RequestAsync(NbdCommand.Write, 1 * (ulong)MiB, (uint)data.Length, payload: data)).Error);
        await first.DisposeAsync();   // unclean: a network cut
        Assert.True(await server.Log.WaitForAsync("kept for 00:00:01.5000000 after an unclean disconnect"));
        Assert.Equal(32 * MiB, server.Registry.Committed);

        // Back within the grace period, asking for another size: the same area, byte for byte.
        var again = await OpenAsync(server, "swap/pc07:64M");
        Assert.Equal((ulong)(32 * MiB), again.ExportSize);
        Assert.Equal(data, (await again.RequestAsync(NbdCommand.Read, 1 * (ulong)MiB, (uint)data.Length)).Data);
        Assert.True(server.Log.Contains("reattached after"));
        await again.DisposeAsync();

        // Gone for longer than the grace period: destroyed, and the next connection starts from zeros.
        Assert.True(await server.Log.WaitForAsync("destroyed (grace period over)", TimeSpan.FromSeconds(5)));
        Assert.Equal(0, server.Registry.Committed);
        var fresh = await OpenAsync(server, "swap/pc07:32M");
        Assert.True((await fresh.RequestAsync(NbdCommand.Read, 1 * (ulong)MiB, (uint)data.Length)).Data.AsSpan().IndexOfAnyExcept((byte)0) < 0);
        Assert.True(SwapHeader.TryRead((await fresh.RequestAsync(NbdCommand.Read, 0, 4096)).Data, out _, out _, out _));
        await DisconnectAsync(fresh);
    }

    [Fact]
    public async Task Reconnect_WhileTheOldConnectionLooksAlive_TakesItOver()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path);
        var data = Pattern(8192, 5);
        await using var old = await OpenAsync(server, "swap/kiosk3");
        await old.RequestAsync(NbdCommand.Write, 4096, 8192, payload: data);
        // The kernel client reconnects before the server noticed the old connection is dead.
        await using var reconnected = await OpenAsync(server, "swap/kiosk3");
        Assert.Equal(data, (await reconnected.RequestAsync(NbdCommand.Read, 4096, 8192)).Data);
        Assert.True(await old.IsClosedAsync(TimeSpan.FromSeconds(5)));
        Assert.True(server.Log.Contains("the same client reconnected"));
        Assert.Single(server.Registry.Snapshot());
    }

    [Fact]
    public async Task Token_FromAnotherAddress_IsRefused()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path);
        await using var owner = await OpenAsync(server, "swap/mine", from: "127.0.0.10");
        await using var thief = await server.ConnectFromAsync("127.0.0.11");
        await thief.StartAsync();
        var go = await thief.InfoOrGoAsync(NbdOption.Go, "swap/mine");
        Assert.Equal(NbdOptionReplyType.ErrPolicy, go.Final);
        Assert.Contains("belongs to another client", go.Message);
    }

    [Fact]
    public async Task Budget_Exhausted_RefusesTheNextClient_NamingTheLimit_OthersKeepWorking()
    {
        await using var fs = await TmpfsMount.CreateAsync(512 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path, o => o.Budget = 48 * MiB);
        await using var a = await OpenAsync(server, "swap:32M");
        var refused = await server.ConnectAsync();
        await refused.StartAsync();
        var info = await refused.InfoOrGoAsync(NbdOption.Info, "swap:32M");
        Assert.Equal(NbdOptionReplyType.ErrPolicy, info.Final);
        var go = await refused.InfoOrGoAsync(NbdOption.Go, "swap:32M");
        Assert.Equal(NbdOptionReplyType.ErrPolicy, go.Final);
        Assert.Contains("swap-budget exhausted", go.Message);
        Assert.True(server.Log.Contains("swap-budget exhausted: 33554432 of 50331648 B in use"));
        // Refused during negotiation; the running client is untouched.
        var data = Pattern(65536, 9);
        Assert.Equal(NbdError.None, (await a.RequestAsync(NbdCommand.Write, 65536, 65536, payload: data)).Error);
        Assert.Equal(data, (await a.RequestAsync(NbdCommand.Read, 65536, 65536)).Data);
        // What fits is still admitted.
        var small = await refused.InfoOrGoAsync(NbdOption.Go, "swap:16M");
        Assert.Equal(NbdOptionReplyType.Ack, small.Final);
        await refused.DisposeAsync();
    }

    [Fact]
    public async Task FreeSpaceReserve_AndMaxSize_AreEnforced_BeforeSwapping()
    {
        await using var fs = await TmpfsMount.CreateAsync(200 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path, o => { o.ReservePercent = 10; o.MaxSize = 1L << 30; });
        var client = await server.ConnectAsync();
        await client.StartAsync();
        var tooMuch = await client.InfoOrGoAsync(NbdOption.Go, "swap:190M");
        Assert.Equal(NbdOptionReplyType.ErrPolicy, tooMuch.Final);
        Assert.Contains("swap-reserve", tooMuch.Message);
        var tooBig = await client.InfoOrGoAsync(NbdOption.Go, "swap:2G");
        Assert.Equal(NbdOptionReplyType.ErrTooBig, tooBig.Final);
        Assert.Contains("swap-max-size", tooBig.Message);
        var invalid = await client.InfoOrGoAsync(NbdOption.Go, "swap/bad token");
        Assert.Equal(NbdOptionReplyType.ErrInvalid, invalid.Final);
        var ok = await client.InfoOrGoAsync(NbdOption.Go, "swap:100M");
        Assert.Equal(NbdOptionReplyType.Ack, ok.Final);
        Assert.Equal((ulong)(100 * MiB), ok.Size);
        await client.DisposeAsync();
        Assert.Equal(0, server.Registry.Snapshot().Count(a => a.Size != 100 * MiB));
    }

    [Fact]
    public async Task ReserveMode_TrimKeepsTheReservation_SparseMode_TrimGivesSpaceBack()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using (var reserve = ServerHarness.StartSwap(fs.Path))
        {
            var client = await OpenAsync(reserve, "swap:32M");
            await client.RequestAsync(NbdCommand.Write, 4 * (ulong)MiB, 4 * 1024 * 1024, payload: Pattern(4 * 1024 * 1024, 2));
            var used = fs.Used;
            Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Trim, 4 * (ulong)MiB, 4 * 1024 * 1024)).Error);
            Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.WriteZeroes, 8 * (ulong)MiB, 1024 * 1024)).Error);
            Assert.Equal(used, fs.Used);
            Assert.True((await client.RequestAsync(NbdCommand.Read, 8 * (ulong)MiB, 1024 * 1024)).Data.AsSpan().IndexOfAnyExcept((byte)0) < 0);
            await DisconnectAsync(client);
        }
        await using var sparse = ServerHarness.StartSwap(fs.Path, o => o.Allocation = SwapAllocation.Sparse);
        var before = fs.Used;
        var thin = await OpenAsync(sparse, "swap:128M");
        Assert.True(fs.Used - before < 1 * MiB, "sparse areas take space only as they are written");
        await thin.RequestAsync(NbdCommand.Write, 4 * (ulong)MiB, 4 * 1024 * 1024, payload: Pattern(4 * 1024 * 1024, 3));
        var written = fs.Used;
        Assert.Equal(NbdError.None, (await thin.RequestAsync(NbdCommand.Trim, 4 * (ulong)MiB, 4 * 1024 * 1024)).Error);
        Assert.True(fs.Used <= written - (4 * MiB), "TRIM punches holes in sparse mode");
        await DisconnectAsync(thin);
    }

    [Fact]
    public async Task SubnetRules_SetTheDefaultSize_MostSpecificWins()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path, o =>
        {
            o.Rules.Add(new SwapSizeRule(System.Net.IPNetwork.Parse("127.0.0.0/8"), 8 * MiB));
            o.Rules.Add(new SwapSizeRule(System.Net.IPNetwork.Parse("127.0.0.42/32"), 12 * MiB));
        });
        await using var lab = await OpenAsync(server, "swap", from: "127.0.0.41");
        await using var special = await OpenAsync(server, "swap", from: "127.0.0.42");
        await using var asked = await OpenAsync(server, "swap:20M", from: "127.0.0.42");
        Assert.Equal((ulong)(8 * MiB), lab.ExportSize);
        Assert.Equal((ulong)(12 * MiB), special.ExportSize);
        Assert.Equal((ulong)(20 * MiB), asked.ExportSize);
    }

    [Fact]
    public async Task SwapOnly_TheEmptyNameIsSwap_AndListShowsIt()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path);
        await using var client = await OpenAsync(server, "");
        Assert.Equal((ulong)(16 * MiB), client.ExportSize);
        var listing = await ExternalTool.RunOkAsync("nbdinfo", "--list", $"nbd://127.0.0.1:{server.Port}");
        Assert.Contains("export=\"swap\"", listing);
        Assert.Contains("can_multi_conn: false", listing);
    }

    [Fact]
    public async Task WithFileExports_SwapNamesStillWork_AndTheEmptyNameIsNotSwap()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path, exports: ("disk", 1 * MiB, false));
        var client = await server.ConnectAsync();
        await client.StartAsync();
        Assert.Equal(NbdOptionReplyType.ErrUnknown, (await client.InfoOrGoAsync(NbdOption.Info, "")).Final);
        Assert.Equal(NbdOptionReplyType.Ack, (await client.InfoOrGoAsync(NbdOption.Info, "disk")).Final);
        Assert.Equal(NbdOptionReplyType.Ack, (await client.InfoOrGoAsync(NbdOption.Go, "swap")).Final);
        await client.DisposeAsync();
    }

    [Fact]
    public async Task InfoAllocatesNothing()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path);
        var before = fs.Used;
        var client = await server.ConnectAsync();
        await client.StartAsync();
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(NbdOptionReplyType.Ack, (await client.InfoOrGoAsync(NbdOption.Info, "swap:100M")).Final);
        }
        Assert.Equal(before, fs.Used);
        Assert.Equal(0, server.Registry.Committed);
        await client.DisposeAsync();
    }

    [Fact]
    public async Task TwoHundredConcurrentClients_EachWriteAndVerifyTheirOwnPattern()
    {
        await using var fs = await TmpfsMount.CreateAsync(1024 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path, o => o.DefaultSize = 2 * MiB);
        var before = fs.Used;
        var clients = await Task.WhenAll(Enumerable.Range(0, 200).Select(i => OpenAsync(server, $"swap/client-{i}", structured: i % 2 == 0)));
        Assert.Equal(200, server.Registry.Snapshot().Count);
        Assert.Equal(200 * 2 * MiB, server.Registry.Committed);
        await Task.WhenAll(clients.Select(async (client, i) =>
        {
            for (var round = 0; round < 4; round++)
            {
                var data = Pattern(65536, (i * 10) + round);
                var offset = (ulong)(4096 + (round * 65536));
                Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Write, offset, 65536, payload: data)).Error);
                Assert.Equal(data, (await client.RequestAsync(NbdCommand.Read, offset, 65536)).Data);
            }
        }));
        await Task.WhenAll(clients.Select(DisconnectAsync));
        Assert.True(await fs.WaitForUsedAsync(u => u <= before, TimeSpan.FromSeconds(5)));
        Assert.Equal(0, server.Registry.Committed);
    }
}
