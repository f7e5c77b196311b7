using System.Net;
using System.Net.Sockets;
using NetSwap.Protocol.Nbd;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Server;

/// <summary>The smaller findings of issue 14, item 7: each answered with the right error, or refused the right way.</summary>
public class BadInputEdgeTests
{
    [Fact]
    public async Task SwapSizeAtTheTopOfTheRange_IsTooBig_NotANegativeSize()
    {
        await using var fs = await TmpfsMount.CreateAsync(64L << 20);
        await using var server = ServerHarness.StartSwap(fs.Path);
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        var result = await client.InfoOrGoAsync(NbdOption.Go, "swap:9223372036854775807");
        Assert.Equal(NbdOptionReplyType.ErrTooBig, result.Final);
        Assert.DoesNotContain("asked for -", result.Message);
        Assert.Contains("swap-max-size", result.Message);
    }

    [Fact]
    public async Task ExportNameOfMoreThan4096Bytes_IsToldItIsTooLong()
    {
        await using var server = await ServerHarness.StartAsync(("disk", 1L << 20, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        var result = await client.InfoOrGoAsync(NbdOption.Go, new string('n', 4097));
        Assert.Equal(NbdOptionReplyType.ErrInvalid, result.Final);
        Assert.Contains("longer than the 4096 bytes allowed", result.Message);
        // The connection is still usable.
        Assert.Equal(NbdOptionReplyType.Ack, (await client.InfoOrGoAsync(NbdOption.Go, "disk")).Final);
    }

    [Fact]
    public async Task DiscoveryPort_CannotBeSharedByAnotherSocket()
    {
        var port = Ports.Unused();
        var swap = Path.Combine(Scratch.Directory("netswap-disc-"), "swap");
        await using var daemon = DaemonProcess.Start("--listen", "127.0.0.1:0", "--swap-dir", swap, "--discovery", "on", "--discovery-port", port.ToString());
        await daemon.WaitForPortAsync();
        Assert.True(await daemon.WaitForLogAsync($":{port}"), daemon.Stderr);
        using var intruder = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        intruder.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        var error = Assert.Throws<SocketException>(() => intruder.Bind(new IPEndPoint(IPAddress.Any, port)));
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
    }
}
