using System.Net;
using NetSwap.Protocol.Nbd;
using NetSwap.Server.Access;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Access;

/// <summary>
/// The access rules and limits on a running server, with clients bound to different loopback source addresses
/// (127.0.0.0/8 offers many; ::1) and a dual-stack listener where IPv4 clients arrive IPv4-mapped.
/// </summary>
public class AccessTests
{
    private const long MiB = 1L << 20;

    internal static AccessPolicy Policy(AccessLimits? limits = null, ClientList? clients = null, Dictionary<string, AddressRuleSet>? perExport = null, params string[] rules) =>
        new(new AddressRuleSet(rules.Select(r =>
        {
            var parts = r.Split(' ');
            return new AddressRule(IPNetwork.Parse(parts[1]), parts[0] == "allow" ? RuleAction.Allow : RuleAction.Deny, "test");
        })), perExport ?? [], clients, limits ?? new AccessLimits());

    /// <summary>A connection closed at once by a limit: reset during connect, or closed before any greeting.</summary>
    private static async Task<bool> IsClosedAtOnceAsync(ServerHarness server, string source)
    {
        try
        {
            await using var client = await server.ConnectFromAsync(source);
            return await client.IsClosedAsync(TimeSpan.FromSeconds(5));
        }
        catch (System.Net.Sockets.SocketException e) when (e.SocketErrorCode is System.Net.Sockets.SocketError.ConnectionReset
            or System.Net.Sockets.SocketError.ConnectionAborted)
        {
            // Reset by the server; a refused or unreachable connect is some other failure and fails the test.
            return true;
        }
    }

    private static async Task<NbdOptionReplyType> GoAsync(int port, string source, string target, string export)
    {
        await using var client = await ServerHarness.ConnectAsync(port, source, target);
        await client.StartAsync();
        return (await client.InfoOrGoAsync(NbdOption.Go, export)).Final;
    }

    [Fact]
    public async Task Matrix_IPv4_IPv6_AndIPv4Mapped()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path);
        server.Context.Policy = Policy(rules: ["allow 127.0.0.0/24", "deny 127.0.0.13/32", "allow ::1/128", "deny 127.0.0.0/8"]);
        var dual = server.ListenDualStack();
        foreach (var (source, target, port, admitted) in new (string, string, int, bool)[]
        {
            ("127.0.0.12", "127.0.0.1", server.Port, true),
            ("127.0.0.13", "127.0.0.1", server.Port, false),
            ("127.0.1.5", "127.0.0.1", server.Port, false),
            ("127.0.0.12", "127.0.0.1", dual, true),    // arrives as ::ffff:127.0.0.12
            ("127.0.0.13", "127.0.0.1", dual, false),   // arrives as ::ffff:127.0.0.13
            ("::1", "::1", dual, true),
        })
        {
            var outcome = await GoAsync(port, source, target, "swap:8M");
            Assert.True(admitted == (outcome == NbdOptionReplyType.Ack), $"{source} -> {target}:{port}: {outcome}");
            if (!admitted)
            {
                Assert.Equal(NbdOptionReplyType.ErrPolicy, outcome);
            }
        }
        Assert.True(server.Log.Contains("refused by the access rules: denied by rule deny 127.0.0.13/32"));
        Assert.True(server.Log.Contains("refused by the access rules: denied by rule deny 127.0.0.0/8"));
    }

    [Fact]
    public async Task RefusedClient_GetsPolicyToEveryOption_AndCostsNothing()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path, exports: ("disk", MiB, false));
        server.Context.Policy = Policy(rules: ["allow 127.0.0.1/32"]);
        var before = fs.Used;
        await using var client = await server.ConnectFromAsync("127.0.0.66");
        await client.StartAsync();
        Assert.Equal(NbdOptionReplyType.ErrPolicy, await client.SimpleOptionAsync(NbdOption.List));
        Assert.Equal(NbdOptionReplyType.ErrPolicy, (await client.InfoOrGoAsync(NbdOption.Info, "disk")).Final);
        Assert.Equal(NbdOptionReplyType.ErrPolicy, (await client.InfoOrGoAsync(NbdOption.Go, "swap")).Final);
        Assert.Equal(NbdOptionReplyType.ErrPolicy, (await client.InfoOrGoAsync(NbdOption.Go, "")).Final);
        Assert.Equal(NbdOptionReplyType.ErrPolicy, await client.SimpleOptionAsync(NbdOption.StructuredReply));
        Assert.Equal(before, fs.Used);
        Assert.Equal(0, server.Registry.Committed);
        Assert.Empty(Directory.EnumerateFileSystemEntries(fs.Path));
        Assert.Equal(NbdOptionReplyType.Ack, await client.SimpleOptionAsync(NbdOption.Abort));

        await using var legacy = await server.ConnectFromAsync("127.0.0.66");
        await legacy.StartAsync();
        await legacy.SendOptionAsync(NbdOption.ExportName, "swap"u8.ToArray());
        Assert.True(await legacy.IsClosedAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(0, server.Registry.Committed);
    }

    [Fact]
    public async Task PerExportRules_ApplyAfterTheGlobalOnes()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path, exports: ("disk", MiB, false));
        var swapRules = new AddressRuleSet([new AddressRule(IPNetwork.Parse("127.0.0.0/8"), RuleAction.Allow, "t"), new AddressRule(IPNetwork.Parse("127.0.0.30/32"), RuleAction.Deny, "t")]);
        server.Context.Policy = Policy(perExport: new() { ["swap"] = swapRules }, rules: ["allow 127.0.0.0/8"]);
        Assert.Equal(NbdOptionReplyType.ErrPolicy, await GoAsync(server.Port, "127.0.0.30", "127.0.0.1", "swap/t30"));
        Assert.Equal(NbdOptionReplyType.Ack, await GoAsync(server.Port, "127.0.0.30", "127.0.0.1", "disk"));
        Assert.Equal(NbdOptionReplyType.Ack, await GoAsync(server.Port, "127.0.0.31", "127.0.0.1", "swap/t31"));
        Assert.True(server.Log.Contains("of export 'swap'"));
    }

    [Fact]
    public async Task ClientList_Edits_ApplyToTheNextConnection_WithoutRestart()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path);
        var list = Path.Combine(server.Directory, "clients");
        await File.WriteAllTextAsync(list, "# valid clients\n127.0.0.40\n");
        server.Context.Policy = Policy(clients: new ClientList(list), rules: ["allow 127.0.0.0/8"]);
        Assert.Equal(NbdOptionReplyType.Ack, await GoAsync(server.Port, "127.0.0.40", "127.0.0.1", "swap:8M"));
        Assert.Equal(NbdOptionReplyType.ErrPolicy, await GoAsync(server.Port, "127.0.0.41", "127.0.0.1", "swap:8M"));
        Assert.True(server.Log.Contains("not on the client list"));
        await File.WriteAllTextAsync(list, "127.0.0.40\n127.0.0.41/32\n");
        File.SetLastWriteTimeUtc(list, DateTime.UtcNow.AddSeconds(5));
        Assert.Equal(NbdOptionReplyType.Ack, await GoAsync(server.Port, "127.0.0.41", "127.0.0.1", "swap:8M"));
    }

    [Fact]
    public async Task LimitsPerAddressAndTotal_CloseExtraConnectionsAtOnce_AndCountThem()
    {
        await using var server = await ServerHarness.StartAsync(("disk", MiB, false));
        server.Context.Policy = Policy(new AccessLimits { MaxClientsPerAddress = 2, MaxClients = 3, ConnectionRate = 0 }, rules: ["allow 127.0.0.0/8"]);
        var a1 = await server.ConnectFromAsync("127.0.0.50");
        var a2 = await server.ConnectFromAsync("127.0.0.50");
        await a1.ReadGreetingAsync();
        await a2.ReadGreetingAsync();
        Assert.True(await IsClosedAtOnceAsync(server, "127.0.0.50"), "third connection from one address must be closed");
        var b1 = await server.ConnectFromAsync("127.0.0.51");
        await b1.ReadGreetingAsync();
        Assert.True(await IsClosedAtOnceAsync(server, "127.0.0.51"), "fourth connection in all must be closed");
        await a1.DisposeAsync();
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (server.Context.Gate.Connections.Open > 2 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10);
        }
        var b3 = await server.ConnectFromAsync("127.0.0.51");
        await b3.ReadGreetingAsync();   // room again once one left
        var (_, perAddress, total) = server.Context.Gate.Connections.TakeRefusals();
        Assert.Equal((1, 1), (perAddress, total));
        foreach (var c in new[] { a2, b1, b3 })
        {
            await c.DisposeAsync();
        }
    }

    [Fact]
    public async Task ConnectionRate_ClosesTheExcess_FromThatAddressOnly()
    {
        await using var server = await ServerHarness.StartAsync(("disk", MiB, false));
        server.Context.Policy = Policy(new AccessLimits { ConnectionRate = 1, ConnectionBurst = 3, MaxClientsPerAddress = 0 }, rules: ["allow 127.0.0.0/8"]);
        var clients = new List<TestNbdClient>();
        for (var i = 0; i < 3; i++)
        {
            var c = await server.ConnectFromAsync("127.0.0.60");
            await c.ReadGreetingAsync();
            clients.Add(c);
        }
        Assert.True(await IsClosedAtOnceAsync(server, "127.0.0.60"));
        var other = await server.ConnectFromAsync("127.0.0.61");
        await other.ReadGreetingAsync();
        Assert.Equal(1, server.Context.Gate.Connections.TakeRefusals().Rate);
        foreach (var c in clients.Append(other))
        {
            await c.DisposeAsync();
        }
    }

    [Fact]
    public async Task MaxClientsPerExport_RefusesGo_NamingTheLimit()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var server = ServerHarness.StartSwap(fs.Path);
        server.Context.Policy = Policy(new AccessLimits { MaxClientsPerExport = 2 }, rules: ["allow 127.0.0.0/8"]);
        await using var a = await server.ConnectAsync();
        await a.StartAsync();
        await a.GoAsync("swap:8M");
        await using var b = await server.ConnectAsync();
        await b.StartAsync();
        await b.GoAsync("swap/b:8M");
        await using var c = await server.ConnectAsync();
        await c.StartAsync();
        var refused = await c.InfoOrGoAsync(NbdOption.Go, "swap/c:8M");
        Assert.Equal(NbdOptionReplyType.ErrPolicy, refused.Final);
        Assert.Contains("max-clients-per-export", refused.Message);
        Assert.Equal(16 * MiB, server.Registry.Committed);
    }
}
