using System.Buffers.Binary;
using System.Text;
using NetSwap.Protocol.Nbd;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Server;

/// <summary>
/// Metadata contexts and NBD_CMD_BLOCK_STATUS (spec, "Metadata querying", NBD_OPT_LIST_META_CONTEXT,
/// NBD_OPT_SET_META_CONTEXT, NBD_REPLY_TYPE_BLOCK_STATUS) at the wire, with a client of the test's own: what libnbd
/// and qemu would not send (bad lengths, too many queries, options out of order) gets the error the spec names.
/// </summary>
public class BlockStatusTests
{
    private const long Size = 8L << 20;

    private static byte[] Request(string export, params string[] queries)
    {
        var request = new NbdMetaContextRequest(export, queries);
        var data = new byte[request.SerializedLength];
        Assert.Equal(data.Length, request.Write(data));
        return data;
    }

    /// <summary>The contexts named and how the option ended, as text that compares by value.</summary>
    private static async Task<string> MetaTextAsync(TestNbdClient client, NbdOption option, byte[] data)
    {
        var (contexts, final) = await MetaAsync(client, option, data);
        return string.Join(",", contexts.Select(c => $"{c.Id}:{c.Name}")) + " " + final;
    }

    /// <summary>Sends the option and reads the replies up to the final one: the contexts named, and how it ended.</summary>
    private static async Task<(List<(uint Id, string Name)> Contexts, NbdOptionReplyType Final)> MetaAsync(TestNbdClient client, NbdOption option, byte[] data)
    {
        await client.SendOptionAsync(option, data);
        var contexts = new List<(uint, string)>();
        while (true)
        {
            var (header, payload) = await client.ReadOptionReplyAsync();
            Assert.Equal(option, header.Option);
            if (header.Type != NbdOptionReplyType.MetaContext)
            {
                return (contexts, header.Type);
            }
            contexts.Add((BinaryPrimitives.ReadUInt32BigEndian(payload), Encoding.UTF8.GetString(payload.AsSpan(4))));
        }
    }

    [Fact]
    public async Task MetaContextOptions_FollowTheSpec()
    {
        await using var server = await ServerHarness.StartAsync(("disk", Size, false), ("ro", Size, true));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();

        // Before structured replies: NBD_REP_ERR_INVALID for both.
        Assert.Equal(NbdOptionReplyType.ErrInvalid, (await MetaAsync(client, NbdOption.ListMetaContext, Request("disk"))).Final);
        Assert.Equal(NbdOptionReplyType.ErrInvalid, (await MetaAsync(client, NbdOption.SetMetaContext, Request("disk", "base:allocation"))).Final);
        Assert.True(await client.NegotiateStructuredRepliesAsync());

        // LIST: every context without a query (ID 0, reserved), by name or namespace; nothing for other namespaces.
        Assert.Equal("0:base:allocation Ack", await MetaTextAsync(client, NbdOption.ListMetaContext, Request("disk")));
        Assert.Equal("0:base:allocation Ack", await MetaTextAsync(client, NbdOption.ListMetaContext, Request("disk", "base:")));
        Assert.Equal(" Ack", await MetaTextAsync(client, NbdOption.ListMetaContext, Request("disk", "x-other:thing", "base:nothing")));
        // An unknown export, a malformed option, too many queries.
        Assert.Equal(NbdOptionReplyType.ErrUnknown, (await MetaAsync(client, NbdOption.ListMetaContext, Request("missing"))).Final);
        Assert.Equal(NbdOptionReplyType.ErrInvalid, (await MetaAsync(client, NbdOption.ListMetaContext, Request("disk", "base:allocation")[..^3])).Final);
        Assert.Equal(NbdOptionReplyType.ErrInvalid, (await MetaAsync(client, NbdOption.ListMetaContext, [.. Request("disk"), 0])).Final);
        Assert.Equal(NbdOptionReplyType.ErrTooBig, (await MetaAsync(client, NbdOption.ListMetaContext, Request("disk", [.. Enumerable.Repeat("base:allocation", 129)]))).Final);

        // SET: the context with a nonzero ID; a namespace alone or no query selects nothing.
        Assert.Equal(" Ack", await MetaTextAsync(client, NbdOption.SetMetaContext, Request("disk")));
        Assert.Equal(" Ack", await MetaTextAsync(client, NbdOption.SetMetaContext, Request("disk", "base:")));
        var (selected, final) = await MetaAsync(client, NbdOption.SetMetaContext, Request("disk", "base:allocation"));
        Assert.Equal(NbdOptionReplyType.Ack, final);
        var (id, name) = Assert.Single(selected);
        Assert.Equal("base:allocation", name);
        Assert.NotEqual(0u, id);

        // Selected for "disk", entered "ro": no context, so BLOCK_STATUS is EINVAL there.
        Assert.Equal(NbdOptionReplyType.Ack, (await client.InfoOrGoAsync(NbdOption.Go, "ro")).Final);
        Assert.Equal(NbdError.Inval, (await client.RequestAsync(NbdCommand.BlockStatus, 0, 4096)).Error);
    }

    [Fact]
    public async Task BlockStatus_ReportsHolesAndData_AsTheFileHasThem()
    {
        await using var server = await ServerHarness.StartAsync(("disk", Size, false));
        using (var file = File.OpenHandle(server.PathOf("disk"), FileMode.Open, FileAccess.Write))
        {
            RandomAccess.Write(file, new byte[64 << 10].Select(_ => (byte)7).ToArray(), 1L << 20);
            RandomAccess.Write(file, new byte[4096].Select(_ => (byte)9).ToArray(), Size - 4096);
        }
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        Assert.True(await client.NegotiateStructuredRepliesAsync());
        var (selected, _) = await MetaAsync(client, NbdOption.SetMetaContext, Request("disk", "base:allocation"));
        Assert.Equal(NbdOptionReplyType.Ack, (await client.InfoOrGoAsync(NbdOption.Go, "disk")).Final);
        var context = Assert.Single(selected).Id;

        const NbdAllocationFlags Hole = NbdAllocationFlags.Hole | NbdAllocationFlags.Zero;
        var all = await client.RequestAsync(NbdCommand.BlockStatus, 0, (uint)Size);
        Assert.Equal(NbdError.None, all.Error);
        var (replyContext, extents) = Assert.Single(all.BlockStatus);
        Assert.Equal(context, replyContext);
        Assert.Equal([new(1u << 20, Hole), new(64u << 10, NbdAllocationFlags.None), new((uint)(Size - (1 << 20) - (64 << 10) - 4096), Hole), new(4096, NbdAllocationFlags.None)], extents);

        // REQ_ONE: one descriptor; from inside an extent, it starts there; never past the request's end.
        Assert.Equal([new(1u << 20, Hole)], Assert.Single((await client.RequestAsync(NbdCommand.BlockStatus, 0, (uint)Size, NbdCommandFlags.ReqOne)).BlockStatus).Extents);
        Assert.Equal([new(4096, NbdAllocationFlags.None)], Assert.Single((await client.RequestAsync(NbdCommand.BlockStatus, (1 << 20) + 4096, 4096)).BlockStatus).Extents);
        Assert.Equal([new(4096, Hole), new(4096, NbdAllocationFlags.None)], Assert.Single((await client.RequestAsync(NbdCommand.BlockStatus, (1 << 20) - 4096, 8192)).BlockStatus).Extents);

        // Length 0, past the end, an unknown flag: EINVAL, and the connection goes on.
        Assert.Equal(NbdError.Inval, (await client.RequestAsync(NbdCommand.BlockStatus, 0, 0)).Error);
        Assert.Equal(NbdError.Inval, (await client.RequestAsync(NbdCommand.BlockStatus, (ulong)Size - 4096, 8192)).Error);
        Assert.Equal(NbdError.Inval, (await client.RequestAsync(NbdCommand.BlockStatus, 0, 4096, NbdCommandFlags.DontFragment)).Error);
        Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Read, 1 << 20, 4096)).Error);
    }

    [Fact]
    public async Task StartTls_ForgetsTheSelectedContext()
    {
        await using var server = await ServerHarness.StartAsync(("disk", Size, false));
        var certs = await TestCertificates.GetAsync();
        server.Context.Tls = certs.Configuration(NetSwap.Server.Tls.TlsMode.On, verifyClient: false);
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        Assert.True(await client.NegotiateStructuredRepliesAsync());
        Assert.Single((await MetaAsync(client, NbdOption.SetMetaContext, Request("disk", "base:allocation"))).Contexts);
        Assert.Equal(NbdOptionReplyType.Ack, await client.StartTlsAsync());
        // Negotiation state is discarded at STARTTLS: structured replies again, but no context.
        Assert.True(await client.NegotiateStructuredRepliesAsync());
        Assert.Equal(NbdOptionReplyType.Ack, (await client.InfoOrGoAsync(NbdOption.Go, "disk")).Final);
        Assert.Equal(NbdError.Inval, (await client.RequestAsync(NbdCommand.BlockStatus, 0, 4096)).Error);
    }
}
