using System.Net;
using NetSwap.Client;
using NetSwap.Client.Attach;
using NetSwap.Client.Tls;
using NetSwap.Protocol.Swap;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Client;

/// <summary>
/// The plumbing of `netswap attach` and `detach`: which commands run, in which order, with which arguments, and how a
/// half-done attach is undone. The commands are recorded, not run; the real run is the VM end-to-end test.
/// </summary>
public sealed class AttachTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("netswap-attach-").FullName;
    private readonly RecordingRunner _runner = new();
    private readonly StringWriter _log = new();

    private sealed class RecordingRunner : ICommandRunner
    {
        public List<string> Commands { get; } = [];
        public Dictionary<string, CommandResult> Failures { get; } = [];
        /// <summary>What the kernel does when nbd-client succeeds: the device gets a pid and a size.</summary>
        public Action<string>? OnConnect { get; set; }

        public Task<CommandResult> RunAsync(string command, IReadOnlyList<string> arguments, CancellationToken cancellationToken = default)
        {
            var line = $"{command} {string.Join(' ', arguments)}";
            Commands.Add(line);
            var failure = Failures.FirstOrDefault(f => line.StartsWith(f.Key, StringComparison.Ordinal));
            if (failure.Value is null && command == "nbd-client" && arguments.Contains("-N"))
            {
                OnConnect?.Invoke(arguments[4]);
            }
            return Task.FromResult(failure.Value ?? new CommandResult(0, ""));
        }

        /// <summary>The keeper: recorded as "keep …", ready at once (pid 777) unless a failure is set for it.</summary>
        public Task<(int Pid, CommandResult? Failure)> StartResidentAsync(string command, IReadOnlyList<string> arguments, string readyFile, TimeSpan wait, CancellationToken cancellationToken = default)
        {
            var line = $"{command} {string.Join(' ', arguments)}";
            Commands.Add(line);
            var failure = Failures.FirstOrDefault(f => line.StartsWith(f.Key, StringComparison.Ordinal));
            if (failure.Value is not null)
            {
                return Task.FromResult((0, (CommandResult?)failure.Value));
            }
            File.WriteAllText(readyFile, "777\n");
            return Task.FromResult((777, (CommandResult?)null));
        }

        public bool Stop(int pid)
        {
            Commands.Add($"stop {pid}");
            return true;
        }
    }

    /// <summary>Records swapon/swapoff/header writes in the same list as the commands, in order.</summary>
    private sealed class RecordingSwapSystem(RecordingRunner runner) : ISwapSystem
    {
        public string? FailSwapOn { get; set; }

        public string? SwapOn(string device, int? priority)
        {
            runner.Commands.Add($"swapon {device}{(priority is { } p ? $" priority {p}" : "")}");
            return FailSwapOn;
        }

        public string? SwapOff(string device)
        {
            runner.Commands.Add($"swapoff {device}");
            return null;
        }

        public string? WriteHeader(string device)
        {
            runner.Commands.Add($"mkswap {device}");
            return null;
        }

        public bool HasHeader(string device) => new LinuxSwapSystem().HasHeader(device);
    }

    private SwapAttacher Attacher(string? failSwapOn = null) =>
        new(_runner, new RecordingSwapSystem(_runner) { FailSwapOn = failSwapOn }, Paths, _log) { KeeperCommand = "netswap" };

    private SystemPaths Paths => new(Path.Combine(_root, "sys", "block"), Path.Combine(_root, "dev"), Path.Combine(_root, "run"), Path.Combine(_root, "swaps"), Path.Combine(_root, "keepers"));

    private string Keep(string dev) =>
        $"netswap keep --device {dev} --server 10.0.5.1:9572 --export swap/pc07:256M --reconnect-for 120s --ready-file {Path.Combine(_root, "keepers", "nbd2.pid")}";

    /// <summary>nbd0 is busy (pid), nbd1 is connected (size), nbd2 is free; /dev/nbd2 holds a page with or without a header.</summary>
    private void Devices(bool header)
    {
        foreach (var (name, pid, size) in new[] { ("nbd0", true, "0"), ("nbd1", false, "8"), ("nbd2", false, "0"), ("nbd10", false, "0") })
        {
            var dir = Path.Combine(_root, "sys", "block", name);
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "size"), size + "\n");
            if (pid)
            {
                File.WriteAllText(Path.Combine(dir, "pid"), "123\n");
            }
        }
        Directory.CreateDirectory(Path.Combine(_root, "dev"));
        var page = new byte[SwapHeader.PageSize];
        if (header)
        {
            SwapHeader.Write(page, 256L << 20, Guid.NewGuid(), "netswap");
        }
        File.WriteAllBytes(Path.Combine(_root, "dev", "nbd2"), page);
        _runner.OnConnect = device =>
        {
            var dir = Path.Combine(_root, "sys", "block", Path.GetFileName(device));
            File.WriteAllText(Path.Combine(dir, "pid"), "4242\n");
            File.WriteAllText(Path.Combine(dir, "size"), "524288\n");
        };
    }

    private static AttachRequest Request(bool encrypt = false, int? priority = null, NbdClientMode mode = NbdClientMode.Reconnect) =>
        new(new IPEndPoint(IPAddress.Parse("10.0.5.1"), 9572), "auto", 256L << 20, "pc07", encrypt, priority, mode);

    [Fact]
    public async Task Attach_WithServerHeader_SkipsMkswap_AndRecordsState()
    {
        Devices(header: true);
        var attacher = Attacher();
        var attached = await attacher.AttachAsync(Request(priority: 5));
        var dev = Path.Combine(_root, "dev", "nbd2");
        // Reconnect mode: nbd-client by netlink with the I/O time-out, then the keeper, running before swap is on.
        Assert.Equal(
        [
            $"nbd-client 10.0.5.1 9572 -N swap/pc07:256M {dev} -swap -b 4096 -timeout 5",
            Keep(dev),
            $"swapon {dev} priority 5",
        ], _runner.Commands);
        Assert.Contains("no mkswap", _log.ToString());
        Assert.Equal(attached, Assert.Single(attacher.Attached()));
        Assert.Equal("swap/pc07:256M", attached.Export);
        Assert.Equal(777, attached.Keeper);
    }

    [Fact]
    public async Task Attach_WithoutHeader_RunsMkswap_AndNetlinkModeHasNoPersist()
    {
        Devices(header: false);
        await Attacher().AttachAsync(Request(mode: NbdClientMode.Netlink));
        var dev = Path.Combine(_root, "dev", "nbd2");
        Assert.Equal([$"nbd-client 10.0.5.1 9572 -N swap/pc07:256M {dev} -swap -b 4096", $"mkswap {dev}", $"swapon {dev}"], _runner.Commands);
    }

    [Fact]
    public async Task Attach_PersistMode_IsNbdClientsIoctlMode_WithoutAKeeper()
    {
        Devices(header: true);
        var attached = await Attacher().AttachAsync(Request(mode: NbdClientMode.Persist));
        var dev = Path.Combine(_root, "dev", "nbd2");
        Assert.Equal([$"nbd-client 10.0.5.1 9572 -N swap/pc07:256M {dev} -swap -b 4096 -nonetlink -persist", $"swapon {dev}"], _runner.Commands);
        Assert.Equal(0, attached.Keeper);
    }

    [Fact]
    public async Task KeeperThatCannotStart_FailsTheAttach_AndUndoesTheDevice()
    {
        Devices(header: true);
        _runner.Failures["netswap keep"] = new CommandResult(1, "netswap: the kernel has no 'nbd' netlink family: is the nbd module loaded?");
        var e = await Assert.ThrowsAsync<AttachException>(() => Attacher().AttachAsync(Request()));
        Assert.Contains("cannot start the reconnect keeper", e.Message);
        Assert.Contains("is the nbd module loaded?", e.Message);
        var dev = Path.Combine(_root, "dev", "nbd2");
        Assert.Equal($"nbd-client -d {dev}", _runner.Commands[^1]);
        Assert.DoesNotContain(_runner.Commands, c => c.StartsWith("swapon", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Attach_Encrypted_PutsDmCryptWithARandomKeyBetweenDeviceAndSwap()
    {
        Devices(header: true);
        var attached = await Attacher().AttachAsync(Request(encrypt: true));
        var dev = Path.Combine(_root, "dev", "nbd2");
        var mapper = Path.Combine(_root, "dev", "mapper", "netswap-nbd2");
        Assert.Equal(
        [
            $"nbd-client 10.0.5.1 9572 -N swap/pc07:256M {dev} -swap -b 4096 -timeout 5",
            $"cryptsetup open --batch-mode --type plain --cipher aes-xts-plain64 --key-size 512 --key-file /dev/urandom {dev} netswap-nbd2",
            $"mkswap {mapper}",
            Keep(dev),
            $"swapon {mapper}",
        ], _runner.Commands);
        Assert.True(attached.Encrypted);
        Assert.Equal(mapper, attached.Target);
    }

    [Fact]
    public async Task FailingStep_IsReportedWithCommandAndOutput_AndEverythingBeforeIsUndone()
    {
        Devices(header: true);
        var attacher = Attacher(failSwapOn: "swapon(/dev/mapper/netswap-nbd2): Invalid argument");
        var e = await Assert.ThrowsAsync<AttachException>(() => attacher.AttachAsync(Request(encrypt: true)));
        Assert.Contains("cannot enable swap", e.Message);
        Assert.Contains("Invalid argument", e.Message);
        var dev = Path.Combine(_root, "dev", "nbd2");
        Assert.Equal(["stop 777", "cryptsetup close netswap-nbd2", $"nbd-client -d {dev}"], _runner.Commands.TakeLast(3));
        Assert.Empty(attacher.Attached());
    }

    [Fact]
    public async Task FailingConnect_UndoesNothing_AndSaysWhy()
    {
        Devices(header: true);
        _runner.Failures["nbd-client"] = new CommandResult(1, "Error: Connection refused");
        var e = await Assert.ThrowsAsync<NegotiationFailedException>(() => Attacher().AttachAsync(Request()));
        Assert.Contains("cannot connect the NBD device", e.Message);
        Assert.Contains("Connection refused", e.Message);
        Assert.Single(_runner.Commands);
    }

    [Fact]
    public async Task NoFreeDevice_LoadsTheModuleOnce_ThenFails()
    {
        Directory.CreateDirectory(Path.Combine(_root, "sys", "block"));
        var e = await Assert.ThrowsAsync<AttachException>(() => Attacher().AttachAsync(Request()));
        Assert.Contains("no free /dev/nbdN", e.Message);
        Assert.Equal(["modprobe nbd"], _runner.Commands);
    }

    [Fact]
    public async Task Detach_SwapoffThenDmCryptThenNbd_AndForgetsTheDevice()
    {
        Devices(header: true);
        var attacher = Attacher();
        var attached = await attacher.AttachAsync(Request(encrypt: true));
        _runner.Commands.Clear();
        Assert.True(await attacher.DetachAsync(attached));
        var dev = Path.Combine(_root, "dev", "nbd2");
        Assert.Equal([$"swapoff {attached.Target}", "cryptsetup close netswap-nbd2", $"nbd-client -d {dev}", "stop 777"], _runner.Commands);
        Assert.Empty(attacher.Attached());
    }

    [Fact]
    public async Task AnAttachmentStillSwapping_IsFound_ADeadRecordIsNot()
    {
        // The initramfs attached; then the system's unit runs `attach` again: it must see the first one (issue 15: it
        // took the area from it under the same token).
        Devices(header: true);
        var attacher = Attacher();
        var attached = await attacher.AttachAsync(Request());
        var swaps = Path.Combine(_root, "swaps");
        File.WriteAllText(swaps, "Filename\tType\tSize\tUsed\tPriority\n/dev/sda2 partition\t1000\t0\t-2\n");
        Assert.Null(attacher.ActiveAttachment());
        File.AppendAllText(swaps, $"{attached.Target} partition\t262140\t0\t5\n");
        Assert.Equal(attached, attacher.ActiveAttachment());

        // An encrypted one shows in /proc/swaps as the dm-N its /dev/mapper name points at.
        var dm = Path.Combine(_root, "dev", "dm-3");
        File.WriteAllText(dm, "");
        Directory.CreateDirectory(Path.Combine(_root, "dev", "mapper"));
        var mapper = Path.Combine(_root, "dev", "mapper", "netswap-nbd2");
        File.CreateSymbolicLink(mapper, dm);
        var state = Directory.GetFiles(Path.Combine(_root, "run")).Single();
        File.WriteAllText(state, (attached with { Target = mapper, Encrypted = true }).Serialize());
        File.WriteAllText(swaps, $"Filename\tType\tSize\tUsed\tPriority\n{dm} partition\t262140\t0\t5\n");
        Assert.Equal(mapper, attacher.ActiveAttachment()?.Target);

        // A record whose device is gone (left by a crash): not attached, and no error.
        File.WriteAllText(state, (attached with { Target = Path.Combine(_root, "dev", "mapper", "gone") }).Serialize());
        Assert.Null(attacher.ActiveAttachment());
    }

    [Fact]
    public void NetswapOff_OnTheKernelCommandLine_TurnsSwapOff_OverTheFile()
    {
        var file = Path.Combine(_root, "client.conf");
        File.WriteAllLines(file, ["SWAP=yes", "SERVER=10.0.5.1"]);
        var off = ClientConfig.Load(file, "root=/dev/nfs netswap=off quiet\n");
        Assert.Equal(SwapPolicy.No, off.Swap);
        Assert.Equal("netswap=off on the kernel command line", off.OffBecause);
        Assert.Equal("10.0.9.9:9572", ClientConfig.Load(file, "netswap=off netswap=10.0.9.9:9572").Server);
        Assert.Equal(SwapPolicy.Yes, ClientConfig.Load(file, "quiet").Swap);
        File.WriteAllLines(file, ["SWAP=no"]);
        Assert.Equal($"SWAP=no in {file}", ClientConfig.Load(file, null).OffBecause);
        // netswap=on asks for swap over the file's SWAP=no (and is no server name).
        var on = ClientConfig.Load(file, "ip=dhcp netswap=on");
        Assert.Equal((SwapPolicy.Yes, null, null), (on.Swap, on.OffBecause, on.Server));
    }

    [Fact]
    public void SwapUsage_ComesFromProcSwaps()
    {
        File.WriteAllText(Path.Combine(_root, "swaps"), "Filename\tType\tSize\tUsed\tPriority\n/dev/nbd0                               partition\t131068\t4096\t-2\n");
        Assert.Equal(4096L * 1024, Attacher().SwapUsage()["/dev/nbd0"]);
    }

    [Fact]
    public void ClientConfig_ParsesEveryKey_AndTheKernelCommandLineWins()
    {
        var config = ClientConfig.Parse("client.conf", ["# lab", "SWAP=auto", "SERVER=10.0.5.1:9572", "SIZE=512M", "ENCRYPT=yes", "PRIORITY=10", "THRESHOLD=128M", "TOKEN=pc-07"]);
        Assert.Equal(new ClientConfig { Swap = SwapPolicy.Auto, Server = "10.0.5.1:9572", Size = 512L << 20, Encrypt = true, Priority = 10, Threshold = 128L << 20, Token = "pc-07" }, config);
        Assert.Equal("10.0.9.9", ClientConfig.ServerFromKernelCommandLine("root=/dev/nfs netswap=10.0.9.9 quiet"));
        Assert.Null(ClientConfig.ServerFromKernelCommandLine("quiet"));
        var e = Assert.Throws<FormatException>(() => ClientConfig.Parse("/etc/netswap/client.conf", ["SWAP=yes", "SIZE=lots"]));
        Assert.StartsWith("/etc/netswap/client.conf:2:", e.Message);
        Assert.Throws<FormatException>(() => ClientConfig.Parse("c", ["BOGUS=1"]));
        Assert.Throws<FormatException>(() => ClientConfig.Parse("c", ["TOKEN=../x"]));
    }

    [Fact]
    public void ClientConfig_TakesLtsp5Keys_WithLtspBooleans()
    {
        // An LTSP5 image's lts.conf lines for network swap, as they were written for nbdswapd.
        var ltsp = ClientConfig.Parse("client.conf", ["NBD_SWAP=True", "NBD_SWAP_SERVER=10.0.5.1", "NBD_SWAP_PORT=9210", "ENCRYPT_SWAP=y"]);
        Assert.Equal(new ClientConfig { Swap = SwapPolicy.Yes, Server = "10.0.5.1", Port = 9210, Encrypt = true }, ltsp);
        Assert.Equal(SwapPolicy.No, ClientConfig.Parse("c", ["NBD_SWAP=N"]).Swap);
        Assert.False(ClientConfig.Parse("c", ["ENCRYPT_SWAP=false"]).Encrypt);
        Assert.Contains("NBD_SWAP must be True or False", Assert.Throws<FormatException>(() => ClientConfig.Parse("c", ["NBD_SWAP=maybe"])).Message);
        Assert.Contains("NBD_SWAP_PORT", Assert.Throws<FormatException>(() => ClientConfig.Parse("c", ["NBD_SWAP_PORT=70000"])).Message);
        // The port goes with a server given without one; one written in SERVER wins.
        Assert.Equal(new IPEndPoint(IPAddress.Parse("10.0.5.1"), 9210), NetSwap.Client.Commands.ServerAddress.Parse(ltsp.Server!, ltsp.Port!.Value));
        Assert.Equal(new IPEndPoint(IPAddress.Parse("10.0.5.1"), 9572), NetSwap.Client.Commands.ServerAddress.Parse("10.0.5.1:9572", 9210));
    }

    [Fact]
    public void Server_MayBeAHostName_ResolvedWhereAResolverExists()
    {
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, 9572), NetSwap.Client.Commands.ServerAddress.Parse("localhost"));
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, 9000), NetSwap.Client.Commands.ServerAddress.Parse("localhost:9000"));
        Assert.Equal(new IPEndPoint(IPAddress.Parse("::1"), 9001), NetSwap.Client.Commands.ServerAddress.Parse("[::1]:9001"));
        // A name that does not resolve fails the command with the name in the message; a malformed one is a usage error.
        Assert.Contains("cannot resolve 'no-such-host.invalid'", Assert.Throws<AttachException>(() => NetSwap.Client.Commands.ServerAddress.Parse("no-such-host.invalid")).Message);
        Assert.Throws<UsageException>(() => NetSwap.Client.Commands.ServerAddress.Parse("bad host!"));
        Assert.Throws<UsageException>(() => NetSwap.Client.Commands.ServerAddress.Parse("localhost:99999"));
    }

    [Fact]
    public void MachineToken_ComesFromMachineId()
    {
        var path = Path.Combine(_root, "machine-id");
        File.WriteAllText(path, "0123456789ABCDEF0123456789abcdef\n");
        var token = MachineToken.Get(path);
        Assert.Equal("m-0123456789abcdef", token);
        Assert.True(SwapExportName.IsValidToken(MachineToken.Get(Path.Combine(_root, "missing"))));
    }

    /// <summary>The kernel-TLS connection of attach --tls, recorded; the device comes up as after nbd-client.</summary>
    private sealed class RecordingConnector(RecordingRunner runner, Action<string> connected, params string[] untrusted) : IKernelConnector
    {
        public Task<string> ConnectAsync(string device, AttachRequest request, string export, CancellationToken cancellationToken)
        {
            runner.Commands.Add($"kernel-tls {request.Server} {export} {device}");
            if (untrusted.Contains(request.Server.ToString()))
            {
                throw new UntrustedServerException("the server's certificate is not trusted: unable to get local issuer certificate");
            }
            connected(device);
            return Task.FromResult("TLS 1.3 (TLS_AES_128_GCM_SHA256, kernel TLS)");
        }
    }

    private SwapAttacher TlsAttacher(bool kernelHasTls, params string[] untrusted) =>
        TlsAttacher(kernelHasTls, new RecordingConnector(_runner, _runner.OnConnect!, untrusted));

    private SwapAttacher TlsAttacher(bool kernelHasTls, IKernelConnector connector)
    {
        var ulp = Path.Combine(_root, "tcp_available_ulp");
        File.WriteAllText(ulp, kernelHasTls ? "mptcp tls\n" : "mptcp\n");
        return new(_runner, new RecordingSwapSystem(_runner), Paths with { AvailableUlp = ulp }, _log)
        {
            KeeperCommand = "netswap",
            Connector = connector,
        };
    }

    private static TlsCredentials Credentials => new TlsCredentials("/etc/netswap/tls/client/ca-cert.pem", null, null) { Directory = "/etc/netswap/tls/client" };

    [Fact]
    public async Task AttachTls_HandsTheDeviceATlsSocket_WithoutNbdClient_AndTheKeeperReconnectsOverTls()
    {
        Devices(header: true);
        await TlsAttacher(kernelHasTls: true).AttachAsync(Request() with { Tls = Credentials });
        var dev = Path.Combine(_root, "dev", "nbd2");
        Assert.Equal(
        [
            $"kernel-tls 10.0.5.1:9572 swap/pc07:256M {dev}",
            Keep(dev) + " --tls-certificates /etc/netswap/tls/client",
            $"swapon {dev}",
        ], _runner.Commands);
        Assert.Contains("kernel TLS", _log.ToString());
    }

    [Fact]
    public async Task AttachTls_WhereTheKernelHasNoKernelTls_FailsBeforeConnecting_NeverInTheClear()
    {
        Devices(header: true);
        var e = await Assert.ThrowsAsync<AttachException>(() => TlsAttacher(kernelHasTls: false).AttachAsync(Request() with { Tls = Credentials }));
        Assert.Contains("cannot attach over TLS: this kernel has no kernel TLS", e.Message);
        Assert.Contains("--tls=prefer", e.Message);
        // The module was asked for once; nothing was connected.
        Assert.Equal(["modprobe tls"], _runner.Commands);
    }

    [Fact]
    public async Task AttachTlsPrefer_WhereTheKernelHasNoKernelTls_AttachesWithoutTls_AndSaysSo()
    {
        Devices(header: true);
        await TlsAttacher(kernelHasTls: false).AttachAsync(Request() with { Tls = Credentials, TlsPreferred = true });
        var dev = Path.Combine(_root, "dev", "nbd2");
        Assert.Equal("modprobe tls", _runner.Commands[0]);
        Assert.Equal($"nbd-client 10.0.5.1 9572 -N swap/pc07:256M {dev} -swap -b 4096 -timeout 5", _runner.Commands[1]);
        Assert.DoesNotContain(_runner.Commands, c => c.Contains("--tls-certificates", StringComparison.Ordinal));
        Assert.Contains("attaching WITHOUT TLS", _log.ToString());
    }

    [Fact]
    public async Task AttachTls_PassesOverAServerTheCaDoesNotVouchFor_AndTakesTheNextFound()
    {
        Devices(header: true);
        IPEndPoint rogue = new(IPAddress.Parse("10.0.5.9"), 9572), good = new(IPAddress.Parse("10.0.5.1"), 9572);
        var attached = await TlsAttacher(kernelHasTls: true, untrusted: rogue.ToString())
            .AttachFirstTrustedAsync([rogue, good], server => Request() with { Server = server, Tls = Credentials });
        Assert.Equal(good.ToString(), attached.Server);
        var dev = Path.Combine(_root, "dev", "nbd2");
        Assert.Equal($"kernel-tls 10.0.5.9:9572 swap/pc07:256M {dev}", _runner.Commands[0]);
        Assert.Equal($"kernel-tls 10.0.5.1:9572 swap/pc07:256M {dev}", _runner.Commands[1]);
        Assert.Contains("skipping 10.0.5.9:9572: the server's certificate is not trusted", _log.ToString());
        // Only one untrusted candidate, and no other: the refusal itself is the error.
        _runner.Commands.Clear();
        await Assert.ThrowsAsync<UntrustedServerException>(() => TlsAttacher(kernelHasTls: true, untrusted: rogue.ToString())
            .AttachFirstTrustedAsync([rogue], server => Request() with { Server = server, Tls = Credentials }));
    }

    [Fact]
    public async Task AttachTls_PassesOverACandidateWhosePortIsClosed_AndTakesTheNextFound()
    {
        // An answer to discovery from an address where nothing takes NBD connections (seen in a VM run: a server
        // listening on IPv4 alone answered over IPv6 too) must not end the attach while another server was found.
        using var closed = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        closed.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        // Alone, the refusal is the error, named as such.
        await AssertTlsAttachPassesOver<UnreachableServerException>((IPEndPoint)closed.LocalEndPoint!);
        Assert.Contains("Connection refused", _log.ToString());
    }

    [Fact]
    public async Task AttachTls_PassesOverAPortThatTakesTcpButSpeaksNoNbd_AndTakesTheNextFound()
    {
        using var other = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        other.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        other.Listen();
        var service = Task.Run(async () =>
        {
            // Some other service on the port: it answers in its own tongue and hangs up.
            for (var i = 0; i < 2; i++)
            {
                using var peer = await other.AcceptAsync();
                await peer.SendAsync("SSH-2.0-OpenSSH_9.2\r\n"u8.ToArray());
                peer.Shutdown(System.Net.Sockets.SocketShutdown.Both);
            }
        });
        // Alone, it is the error, named as a failed negotiation.
        await AssertTlsAttachPassesOver<NegotiationFailedException>((IPEndPoint)other.LocalEndPoint!);
        await service.WaitAsync(TimeSpan.FromSeconds(10));
    }

    /// <summary>
    /// With the real kernel-TLS connector for <paramref name="odd"/> (ranked first) and a recording one for a good server:
    /// the attach skips <paramref name="odd"/>, named, and takes the good one; asked alone, <paramref name="odd"/> fails
    /// with <typeparamref name="TException"/>.
    /// </summary>
    private async Task AssertTlsAttachPassesOver<TException>(IPEndPoint odd) where TException : Exception
    {
        Devices(header: true);
        var tls = TlsCredentials.FromDirectory((await TestCertificates.GetAsync()).Client("pc01"));
        var good = new IPEndPoint(IPAddress.Parse("10.0.5.1"), 9572);
        var connector = new RoutingConnector(odd, new KernelTlsConnector(), new RecordingConnector(_runner, _runner.OnConnect!));
        var attached = await TlsAttacher(kernelHasTls: true, connector).AttachFirstTrustedAsync([odd, good], server => Request() with { Server = server, Tls = tls });
        Assert.Equal(good.ToString(), attached.Server);
        Assert.Contains($"skipping {odd}: cannot connect", _log.ToString());
        var e = await Assert.ThrowsAsync<TException>(() => new KernelTlsConnector().ConnectAsync("/dev/nbd5",
            Request() with { Server = odd, Tls = tls }, "swap/pc07:256M", default));
        Assert.Contains($"cannot connect /dev/nbd5 to {odd} over TLS", e.Message);
    }

    [Fact]
    public async Task Attach_PassesOverADiscoveredServerWhosePortCannotBeReached_ThenNbdClientConnectsTheNext()
    {
        Devices(header: true);
        IPEndPoint gone = new(IPAddress.Parse("10.0.5.9"), 9572), good = new(IPAddress.Parse("10.0.5.1"), 9572);
        var asked = new List<IPEndPoint>();
        var attacher = new SwapAttacher(_runner, new RecordingSwapSystem(_runner), Paths, _log)
        {
            KeeperCommand = "netswap",
            Reach = server =>
            {
                asked.Add(server);
                return server.Equals(gone) ? $"cannot connect to {server}: Connection refused" : null;
            },
        };
        var attached = await attacher.AttachFirstTrustedAsync([gone, good], server => Request() with { Server = server });
        Assert.Equal(good.ToString(), attached.Server);
        // The last candidate is not asked first: its own failure would be the attach's error anyway.
        Assert.Equal([gone], asked);
        Assert.DoesNotContain(_runner.Commands, c => c.StartsWith("nbd-client 10.0.5.9", StringComparison.Ordinal));
        Assert.Contains(_runner.Commands, c => c.StartsWith("nbd-client 10.0.5.1 9572", StringComparison.Ordinal));
        Assert.Contains("skipping 10.0.5.9:9572: cannot connect to 10.0.5.9:9572: Connection refused; trying 10.0.5.1:9572", _log.ToString());
    }

    [Fact]
    public async Task Attach_PassesOverAServerWhereNbdClientFails_AndConnectsTheNext_ButTheLastFailureIsTheError()
    {
        // A port that takes TCP but does not negotiate (another service, or a server refusing this client).
        Devices(header: true);
        IPEndPoint odd = new(IPAddress.Parse("10.0.5.9"), 9572), good = new(IPAddress.Parse("10.0.5.1"), 9572);
        _runner.Failures["nbd-client 10.0.5.9"] = new CommandResult(1, "Error: Server closed connection");
        var attacher = new SwapAttacher(_runner, new RecordingSwapSystem(_runner), Paths, _log) { KeeperCommand = "netswap", Reach = _ => null };
        var attached = await attacher.AttachFirstTrustedAsync([odd, good], server => Request() with { Server = server });
        Assert.Equal(good.ToString(), attached.Server);
        Assert.Contains("skipping 10.0.5.9:9572: cannot connect the NBD device: `nbd-client 10.0.5.9 9572", _log.ToString());
        Assert.Contains("Error: Server closed connection; trying 10.0.5.1:9572", _log.ToString());
        Assert.DoesNotContain(_runner.Commands, c => c.StartsWith("nbd-client -d", StringComparison.Ordinal));
        // The last candidate's failure ends the attach, with nbd-client's own words.
        var e = await Assert.ThrowsAsync<NegotiationFailedException>(() => attacher.AttachFirstTrustedAsync([odd], server => Request() with { Server = server }));
        Assert.Contains("Error: Server closed connection", e.Message);
    }

    [Fact]
    public void TheReachCheck_SaysWhyAClosedPortCannotBeReached_AndNothingOfAnOpenOne()
    {
        using var closed = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        closed.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        using var open = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        open.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        open.Listen();
        var reach = Attacher().Reach;
        Assert.Contains("Connection refused", reach((IPEndPoint)closed.LocalEndPoint!));
        Assert.Null(reach((IPEndPoint)open.LocalEndPoint!));
    }

    /// <summary>The real connector for one address, the recording one for the rest.</summary>
    private sealed class RoutingConnector(IPEndPoint real, IKernelConnector connector, IKernelConnector others) : IKernelConnector
    {
        public Task<string> ConnectAsync(string device, AttachRequest request, string export, CancellationToken cancellationToken) =>
            (request.Server.Equals(real) ? connector : others).ConnectAsync(device, request, export, cancellationToken);
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);
}

public class ClientCommandLineTests
{
    [Fact]
    public void Options_AreReadOnce_InEitherForm_AndUnknownOnesAreErrors()
    {
        var reader = new NetSwap.Client.Commands.ArgumentReader(["10.0.0.1", "--size", "128M", "--token=pc7", "--encrypt", "--timeout", "500ms", "--reconnect-for", "2m", "--mode", "netlink"]);
        Assert.Equal(128L << 20, reader.OptionalSize("--size"));
        Assert.Null(reader.OptionalSize("--size"));
        Assert.Equal("pc7", reader.Value("--token"));
        Assert.True(reader.Flag("--encrypt"));
        Assert.Equal(TimeSpan.FromMilliseconds(500), reader.Duration("--timeout", TimeSpan.Zero));
        Assert.Equal(TimeSpan.FromMinutes(2), reader.Duration("--reconnect-for", TimeSpan.Zero));
        Assert.Equal("netlink", reader.OneOf("--mode", "reconnect", "netlink", "persist"));
        Assert.Equal("reconnect", reader.OneOf("--mode", "reconnect", "netlink", "persist"));
        reader.EnsureConsumed(maxPositional: 1);
        Assert.Equal(["10.0.0.1"], reader.Positional);
        Assert.Equal("unknown option '--bogus'", Assert.Throws<NetSwap.Client.UsageException>(() => new NetSwap.Client.Commands.ArgumentReader(["--bogus"]).EnsureConsumed()).Message);
        Assert.Equal("unexpected argument 'b'", Assert.Throws<NetSwap.Client.UsageException>(() => new NetSwap.Client.Commands.ArgumentReader(["a", "b"]).EnsureConsumed(1)).Message);
        Assert.Throws<NetSwap.Client.UsageException>(() => new NetSwap.Client.Commands.ArgumentReader(["--size", "0"]).OptionalSize("--size"));
        Assert.Equal("option '--mode': 'x' is not reconnect, netlink or persist",
            Assert.Throws<NetSwap.Client.UsageException>(() => new NetSwap.Client.Commands.ArgumentReader(["--mode", "x"]).OneOf("--mode", "reconnect", "netlink", "persist")).Message);
        Assert.Equal("swap/t", new NetSwap.Protocol.Swap.SwapExportName("t", 0).ToString());
    }

    [Fact]
    public void AnOptionalValue_IsTheBareFlagsMeaning_OrWhatFollowsTheEqualsSign_AndNeverSwallowsAPositional()
    {
        var reader = new NetSwap.Client.Commands.ArgumentReader(["--tls", "10.0.0.1"]);
        Assert.Equal("require", reader.FlagOrValue("--tls", "require"));
        Assert.Null(reader.FlagOrValue("--tls", "require"));
        reader.EnsureConsumed(maxPositional: 1);
        Assert.Equal(["10.0.0.1"], reader.Positional);
        Assert.Equal("prefer", new NetSwap.Client.Commands.ArgumentReader(["--tls=prefer"]).FlagOrValue("--tls", "require"));
        // A value option given bare still needs its value.
        Assert.Equal("option '--size' needs a value", Assert.Throws<NetSwap.Client.UsageException>(() => new NetSwap.Client.Commands.ArgumentReader(["--size"]).All("--size")).Message);
    }

    [Theory]
    [InlineData("/dev/nbd0", true, 0u)]
    [InlineData("/dev/nbd15", true, 15u)]
    [InlineData("nbd3", true, 3u)]
    [InlineData("/dev/nbd", false, 0u)]
    [InlineData("/dev/nbd1p1", false, 0u)]
    [InlineData("/dev/sda", false, 0u)]
    [InlineData("/dev/nbd-1", false, 0u)]
    public void ADevicePath_GivesTheDriversIndex_OnlyForNbdN(string device, bool valid, uint index)
    {
        Assert.Equal(valid, NetSwap.Client.Kernel.NbdNetlink.TryParseIndex(device, out var parsed));
        Assert.Equal(index, parsed);
    }

    /// <summary>Each command's table (help, man page test, completion) and its reader agree: every option the table
    /// names is accepted, with a value where it says one, and --help names every one.</summary>
    [Fact]
    public void EveryCommandsTable_MatchesWhatItAccepts()
    {
        foreach (var command in NetSwap.Client.Commands.ClientCommandLine.Commands)
        {
            var help = command.Help();
            foreach (var option in command.Options)
            {
                Assert.Contains(option.Name + (option.ValueName is null ? "" : " " + option.ValueName), help);
                if (command.Name is "version" or "help")
                {
                    continue;
                }
                // An option the reader does not take is "unknown option"; any other outcome (another usage error, such
                // as a required option missing, or the work returned, not begun) shows it took it.
                var value = option.Values?[0] ?? option.ValueName switch
                {
                    null => null,
                    "SIZE" => "64M",
                    "DURATION" => "1ms",
                    "N" or "PORT" => "1",
                    _ => "/nonexistent/x",
                };
                string[] args = value is null ? [option.Name] : [option.Name, value];
                var message = Record.Exception(() => command.Read(new NetSwap.Client.Commands.ArgumentReader(args)))?.Message ?? "";
                Assert.DoesNotContain("unknown option", message);
                Assert.DoesNotContain("needs a value", message);
            }
        }
    }

    [Fact]
    public void Completion_OffersCommandsOptionsAndValues()
    {
        static string[] Complete(params string[] words) => [.. NetSwap.Client.Commands.ClientCommandLine.Complete(words)];
        Assert.Contains("attach", Complete());
        Assert.Contains("server-status", Complete());
        Assert.Contains("--mode", Complete("attach"));
        Assert.Contains("--help", Complete("detach", "--all"));
        Assert.Equal(["reconnect", "netlink", "persist"], Complete("attach", "--mode"));
        Assert.Empty(Complete("attach", "--size"));        // a value of the user's: nothing to offer
        Assert.Contains("exports", Complete("help"));
        Assert.Empty(Complete("bogus"));
    }
}
