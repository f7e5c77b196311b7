using System.Buffers.Binary;
using System.Text;
using NetSwap.Protocol.Nbd;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Server;

/// <summary>Option haggling per doc/proto.md, and every kind of bad handshake input (issue 2, "Bad input").</summary>
public class HandshakeTests
{
    private static byte[] Bytes(string text) => Encoding.UTF8.GetBytes(text);

    [Fact]
    public async Task Greeting_AdvertisesFixedNewstyleAndNoZeroes()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.ReadGreetingAsync();
        Assert.Equal(NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes, client.ServerFlags);
    }

    [Fact]
    public async Task UnknownClientFlags_CloseTheConnection()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync((NbdClientFlags)0x4);
        Assert.True(await client.IsClosedAsync(TimeSpan.FromSeconds(5)));
        Assert.True(await server.Log.WaitForAsync("unknown client flags 0x00000004"));
    }

    [Fact]
    public async Task BadOptionMagic_ClosesTheConnection_AndOthersAreUnaffected()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var good = await server.ConnectAsync();
        await good.StartAsync();
        await using var bad = await server.ConnectAsync();
        await bad.StartAsync();
        await bad.WriteAsync(new byte[16]);
        Assert.True(await bad.IsClosedAsync(TimeSpan.FromSeconds(5)));
        Assert.True(await server.Log.WaitForAsync("protocol violation"));
        await good.GoAsync("disk");
        var reply = await good.RequestAsync(NbdCommand.Read, 0, 512);
        Assert.Equal(NbdError.None, reply.Error);
    }

    [Fact]
    public async Task TruncatedHandshake_IsLogged()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        var client = await server.ConnectAsync();
        await client.StartAsync();
        await client.WriteAsync(new byte[] { 0x49, 0x48, 0x41 }); // 3 bytes of an option header
        await client.DisposeAsync();
        Assert.True(await server.Log.WaitForAsync("in the middle of a message"));
    }

    [Fact]
    public async Task OptionLongerThanTheCap_ClosesTheConnection()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        var header = new byte[NbdOptionHeader.Size];
        new NbdOptionHeader(NbdOption.Info, 64 * 1024 + 1).Write(header);
        await client.WriteAsync(header);
        Assert.True(await client.IsClosedAsync(TimeSpan.FromSeconds(5)));
        Assert.True(await server.Log.WaitForAsync("exceeds the limit"));
    }

    [Fact]
    public async Task ExportNameLongerThan4096_ClosesTheConnection()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        var header = new byte[NbdOptionHeader.Size];
        new NbdOptionHeader(NbdOption.ExportName, 4097).Write(header);
        await client.WriteAsync(header);
        Assert.True(await client.IsClosedAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task MoreThan64Options_CloseTheConnection()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        for (var i = 0; i < NbdLimits.MaxOptionCount; i++)
        {
            Assert.Equal(NbdOptionReplyType.ErrUnsup, await client.SimpleOptionAsync((NbdOption)1000));
        }
        await client.SendOptionAsync((NbdOption)1000, default);
        Assert.True(await client.IsClosedAsync(TimeSpan.FromSeconds(5)));
        Assert.True(await server.Log.WaitForAsync("more than 64 options"));
    }

    [Fact]
    public async Task StalledClient_TimesOut_AndOthersAreUnaffected()
    {
        // Long enough for the good client's whole handshake on a busy test host (the limit applies to it too).
        await using var server = await ServerHarness.StartAsync(o => o.HandshakeTimeout = TimeSpan.FromMilliseconds(1500), ("disk", 1 << 20, false));
        await using var stalled = await server.ConnectAsync();
        await stalled.ReadGreetingAsync();
        await stalled.WriteAsync(new byte[] { 0, 0 }); // half the client flags, then nothing
        await using var good = await server.ConnectAsync();
        await good.StartAsync();
        await good.GoAsync("disk");
        Assert.True(await stalled.IsClosedAsync(TimeSpan.FromSeconds(15)));
        Assert.True(await server.Log.WaitForAsync("handshake timed out"));
        Assert.Equal(NbdError.None, (await good.RequestAsync(NbdCommand.Read, 0, 4096)).Error);
    }

    [Fact]
    public async Task UnknownOption_GetsUnsup_AndTheStreamStaysInSync()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        Assert.Equal(NbdOptionReplyType.ErrUnsup, await client.SimpleOptionAsync((NbdOption)0x1234, new byte[300]));
        Assert.Equal(NbdOptionReplyType.ErrUnsup, await client.SimpleOptionAsync(NbdOption.ExtendedHeaders, new byte[20]));
        await client.GoAsync("disk");
    }

    [Fact]
    public async Task List_ReturnsEveryExport_AndRejectsData()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false), ("ro", 1 << 20, true));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        await client.SendOptionAsync(NbdOption.List, default);
        var names = new List<string>();
        while (true)
        {
            var (header, payload) = await client.ReadOptionReplyAsync();
            if (header.Type != NbdOptionReplyType.Server)
            {
                Assert.Equal(NbdOptionReplyType.Ack, header.Type);
                break;
            }
            Assert.True(NbdServerReply.TryRead(payload, out var name, out _));
            names.Add(name);
        }
        Assert.Equal(["disk", "ro"], names.Order());
        Assert.Equal(NbdOptionReplyType.ErrInvalid, await client.SimpleOptionAsync(NbdOption.List, new byte[4]));
    }

    [Fact]
    public async Task Info_ReportsExactlyWhatGoReports()
    {
        await using var server = await ServerHarness.StartAsync(("described", 3 * 1024 * 1024 + 512, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        Assert.True(await client.NegotiateStructuredRepliesAsync());
        var info = await client.InfoOrGoAsync(NbdOption.Info, "described", NbdInfoType.Name, NbdInfoType.Description, NbdInfoType.BlockSize);
        Assert.Equal(NbdOptionReplyType.Ack, info.Final);
        Assert.Equal(3UL * 1024 * 1024 + 512, info.Size);
        Assert.Equal("described", info.Name);
        Assert.Equal("a described export", info.Description);
        Assert.Equal((1u, 4096u, 32u * 1024 * 1024), info.BlockSize);
        var go = await client.InfoOrGoAsync(NbdOption.Go, "described", NbdInfoType.BlockSize);
        Assert.Equal(NbdOptionReplyType.Ack, go.Final);
        Assert.Equal(info.Size, go.Size);
        Assert.Equal(info.Flags, go.Flags);
        var expected = NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush | NbdTransmissionFlags.SendFua
            | NbdTransmissionFlags.SendTrim | NbdTransmissionFlags.SendWriteZeroes | NbdTransmissionFlags.SendFastZero
            | NbdTransmissionFlags.SendCache | NbdTransmissionFlags.SendDf | NbdTransmissionFlags.CanMultiConn;
        Assert.Equal(expected, go.Flags);
    }

    [Fact]
    public async Task ReadOnlyExport_AdvertisesNoWriteFeatures_AndNoDfWithoutStructuredReplies()
    {
        await using var server = await ServerHarness.StartAsync(("ro", 1 << 20, true));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        var info = await client.InfoOrGoAsync(NbdOption.Info, "ro");
        Assert.Equal(NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.ReadOnly | NbdTransmissionFlags.SendFlush
            | NbdTransmissionFlags.SendCache | NbdTransmissionFlags.CanMultiConn, info.Flags);
        Assert.Null(info.Description);
    }

    [Fact]
    public async Task UnknownExport_GetsUnknown_ForInfoAndGo()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        var info = await client.InfoOrGoAsync(NbdOption.Info, "nope");
        Assert.Equal(NbdOptionReplyType.ErrUnknown, info.Final);
        Assert.Contains("nope", info.Message);
        var go = await client.InfoOrGoAsync(NbdOption.Go, "nope");
        Assert.Equal(NbdOptionReplyType.ErrUnknown, go.Final);
        await client.GoAsync("disk");
    }

    [Fact]
    public async Task UnknownExport_ClosesAfterExportName()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        await client.SendOptionAsync(NbdOption.ExportName, Bytes("nope"));
        Assert.True(await client.IsClosedAsync(TimeSpan.FromSeconds(5)));
        Assert.True(await server.Log.WaitForAsync("export 'nope' refused"));
    }

    [Theory]
    [InlineData(true, 10)]
    [InlineData(false, 134)]
    public async Task ExportName_RepliesSizeAndFlags_WithOrWithoutZeroes(bool noZeroes, int replyLength)
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync(NbdClientFlags.FixedNewstyle | (noZeroes ? NbdClientFlags.NoZeroes : 0));
        await client.SendOptionAsync(NbdOption.ExportName, Bytes("disk"));
        var reply = await client.ReadExactAsync(replyLength);
        Assert.True(NbdExportNameReply.TryRead(reply, out var parsed));
        Assert.Equal(1UL << 20, parsed.ExportSize);
        Assert.True((parsed.Flags & NbdTransmissionFlags.HasFlags) != 0);
        Assert.True((parsed.Flags & NbdTransmissionFlags.SendDf) == 0);
        Assert.All(reply[10..], b => Assert.Equal(0, b));
        // Transmission follows at once: a simple-reply read works.
        var read = await client.RequestAsync(NbdCommand.Read, 0, 100);
        Assert.Equal(NbdError.None, read.Error);
        Assert.Equal(100, read.Data.Length);
    }

    [Fact]
    public async Task Abort_IsAcknowledged_ThenClosed()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        Assert.Equal(NbdOptionReplyType.Ack, await client.SimpleOptionAsync(NbdOption.Abort));
        Assert.True(await client.IsClosedAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task MalformedOptions_GetInvalid()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        Assert.Equal(NbdOptionReplyType.ErrInvalid, await client.SimpleOptionAsync(NbdOption.StructuredReply, new byte[1]));
        Assert.Equal(NbdOptionReplyType.ErrInvalid, await client.SimpleOptionAsync(NbdOption.Go, new byte[] { 0, 0, 0, 50, 1, 2 }));
        Assert.Equal(NbdOptionReplyType.ErrInvalid, await client.SimpleOptionAsync(NbdOption.Info, new byte[] { 0, 0, 0, 0, 0, 3, 0, 1 }));
        await client.GoAsync("disk");
    }

    [Fact]
    public async Task StartTls_IsRefusedByPolicy_WhenTlsIsNotConfigured()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        Assert.Equal(NbdOptionReplyType.ErrPolicy, await client.SimpleOptionAsync(NbdOption.StartTls));
        await client.GoAsync("disk");
    }

    [Fact]
    public async Task DuringShutdown_OptionsGetShutdown()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        server.Context.BeginShutdown();
        Assert.Equal(NbdOptionReplyType.ErrShutdown, (await client.InfoOrGoAsync(NbdOption.Go, "disk")).Final);
        Assert.Equal(NbdOptionReplyType.Ack, await client.SimpleOptionAsync(NbdOption.Abort));
    }

    [Fact]
    public async Task HandshakeWorksOverAnInMemoryPipe()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        var client = server.ConnectInMemory(out var serverTask);
        await client.StartAsync();
        await client.GoAsync("disk");
        var write = await client.RequestAsync(NbdCommand.Write, 10, 3, payload: new byte[] { 1, 2, 3 });
        Assert.Equal(NbdError.None, write.Error);
        var read = await client.RequestAsync(NbdCommand.Read, 9, 5);
        Assert.Equal(new byte[] { 0, 1, 2, 3, 0 }, read.Data);
        var disc = new byte[NbdRequest.Size];
        new NbdRequest(0, NbdCommand.Disc, 99, 0, 0).Write(disc);
        await client.WriteAsync(disc);
        await serverTask.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.True(await server.Log.WaitForAsync("NBD_CMD_DISC"));
        await client.DisposeAsync();
    }

    [Fact]
    public async Task ClientFlagsAreBigEndian32()
    {
        // Guards the 4-byte flags read: 0x00000001 (fixed newstyle only) must be accepted.
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        await using var client = await server.ConnectAsync();
        await client.ReadGreetingAsync();
        var flags = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(flags, 1);
        await client.WriteAsync(flags);
        await client.GoAsync("disk", structured: false);
        Assert.Equal(1UL << 20, client.ExportSize);
    }
}
