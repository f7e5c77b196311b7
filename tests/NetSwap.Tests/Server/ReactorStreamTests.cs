using System.Net;
using System.Net.Sockets;
using NetSwap.Server.Transport;

namespace NetSwap.Tests.Server;

/// <summary>
/// The socket stream served by the server's own event loops, over real loopback TCP: waits in both directions (a
/// socket buffer really fills), zero-byte reads, end of stream, cancellation, disposal under a pending wait, where
/// continuations run, and sendfile with a file that is shorter than the reply.
/// </summary>
public class ReactorStreamTests
{
    /// <summary>A server-side socket stream on an event loop and its loopback client.</summary>
    internal static async Task<(ReactorStream Server, NetworkStream Client)> PairAsync()
    {
        using var listener = SocketSetup.Listen(new IPEndPoint(IPAddress.Loopback, 0));
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var accept = listener.AcceptAsync();
        await client.ConnectAsync((IPEndPoint)listener.LocalEndPoint!);
        var server = ReactorStream.TryCreate(await accept);
        Assert.NotNull(server);
        return (server!, new NetworkStream(client, ownsSocket: true));
    }

    private static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    [Fact]
    public async Task ManyMegabytesBothWaysAtOnce_ArriveIntact()
    {
        var (server, client) = await PairAsync();
        await using var _ = server;
        await using var __ = client;
        // Far more than the socket buffers hold: both sides must wait for room and for data many times.
        var up = Pattern(24 << 20, 1);
        var down = Pattern(24 << 20, 2);
        var received = new byte[up.Length];
        var serverSide = Task.Run(async () =>
        {
            var send = server.WriteAsync(down).AsTask();
            await server.ReadExactlyAsync(received);
            await send;
        });
        var clientReceived = new byte[down.Length];
        var clientSend = client.WriteAsync(up).AsTask();
        await client.ReadExactlyAsync(clientReceived);
        await clientSend;
        await serverSide.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(up.AsSpan().SequenceEqual(received));
        Assert.True(down.AsSpan().SequenceEqual(clientReceived));
    }

    [Fact]
    public async Task ZeroByteRead_WaitsForData_WithoutTakingIt_AndEndOfStreamReadsZero()
    {
        var (server, client) = await PairAsync();
        await using var _ = server;
        var wait = server.ReadAsync(Memory<byte>.Empty).AsTask();
        await Task.Delay(100);
        Assert.False(wait.IsCompleted);
        await client.WriteAsync(new byte[] { 42 });
        Assert.Equal(0, await wait.WaitAsync(TimeSpan.FromSeconds(10)));
        var one = new byte[1];
        Assert.Equal(1, await server.ReadAsync(one));
        Assert.Equal(42, one[0]);
        await client.DisposeAsync();
        Assert.Equal(0, await server.ReadAsync(one).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task CancelledRead_Throws_AndTheStreamStillWorks()
    {
        var (server, client) = await PairAsync();
        await using var _ = server;
        await using var __ = client;
        using var cancel = new CancellationTokenSource();
        var buffer = new byte[16];
        var read = server.ReadAsync(buffer, cancel.Token).AsTask();
        await Task.Delay(50);
        Assert.False(read.IsCompleted);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => read.WaitAsync(TimeSpan.FromSeconds(10)));
        await client.WriteAsync(new byte[] { 1, 2, 3 });
        Assert.Equal(3, await server.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task Dispose_EndsAPendingRead()
    {
        var (server, client) = await PairAsync();
        await using var __ = client;
        var read = server.ReadAsync(new byte[16]).AsTask();
        await Task.Delay(50);
        await server.DisposeAsync();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => read.WaitAsync(TimeSpan.FromSeconds(10)));
        // The socket is closed: the peer sees the end of the stream.
        Assert.Equal(0, await client.ReadAsync(new byte[1]).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task APeerThatResets_FailsTheReadAndTheWrite_AsAReset()
    {
        var (server, client) = await PairAsync();
        await using var _ = server;
        var read = server.ReadAsync(new byte[16]).AsTask();
        // Close(0): SO_LINGER 0, so the close sends RST, as a client that crashes or a firewall that cuts does.
        client.Socket.Close(0);
        var failure = await Assert.ThrowsAsync<TransportException>(() => read.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(TransportFailureKind.Reset, failure.Kind);
        var write = await Assert.ThrowsAsync<TransportException>(async () => await server.WriteAsync(new byte[16]));
        Assert.Equal(TransportFailureKind.Reset, write.Kind);
    }

    [Theory]
    [InlineData(104, "Reset")]     // ECONNRESET
    [InlineData(32, "Reset")]      // EPIPE
    [InlineData(110, "TimedOut")]  // ETIMEDOUT: keepalive or retransmissions gave up
    [InlineData(103, "Other")]     // ECONNABORTED: ss -K
    [InlineData(113, "Other")]     // EHOSTUNREACH
    public void Errnos_AreClassifiedWhereTheyAreKnown(int errno, string expected)
    {
        var kind = Enum.Parse<TransportFailureKind>(expected);
        Assert.Equal(kind, TransportException.KindOf(errno));
        Assert.Equal(kind, TransportException.Classify(TransportException.FromErrno("recv", errno)));
    }

    [Fact]
    public void DotNetsOwnSocketErrors_AreClassifiedTheSameWay_ThroughTheirWrappers()
    {
        // NetworkStream wraps SocketException in IOException; SslStream wraps that in another IOException.
        var reset = new IOException("ssl", new IOException("net", new SocketException((int)SocketError.ConnectionReset)));
        Assert.Equal(TransportFailureKind.Reset, TransportException.Classify(reset));
        Assert.Equal(TransportFailureKind.TimedOut, TransportException.Classify(new IOException("net", new SocketException((int)SocketError.TimedOut))));
        Assert.Equal(TransportFailureKind.Other, TransportException.Classify(new IOException("plain")));
        Assert.Equal(TransportFailureKind.Reset, TransportException.Classify(new IOException("ssl", TransportException.FromErrno("send", 104))));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task InlineCompletions_DecideWhereAWaitContinues(bool inline)
    {
        // Without a synchronization context, as the server's receive loops run: xunit's test context would otherwise
        // get the continuation whenever every await before the read completed synchronously (a loopback connect does,
        // and the accept has done so when the test host is slow), and the check would be about xunit, not the stream.
        var thread = await Task.Run(async () =>
        {
            var (server, client) = await PairAsync();
            await using var _ = server;
            await using var __ = client;
            server.InlineCompletions = inline;
            var read = ContinuationThreadAsync(server);
            // The read has found the socket empty and waits for the event loop (no sleep needed to get there).
            Assert.Equal(1, server.Waits);
            await client.WriteAsync(new byte[] { 7 });
            return await read.WaitAsync(TimeSpan.FromSeconds(10));
        });
        Assert.Equal(inline, thread?.StartsWith("netswap-io-", StringComparison.Ordinal) == true);
    }

    private static async Task<string?> ContinuationThreadAsync(ReactorStream stream)
    {
        Assert.Equal(1, await stream.ReadAsync(new byte[1]));
        return Thread.CurrentThread.Name;
    }

    [Fact]
    public async Task SendFile_SendsHeaderAndFileBytes_AndZerosPastTheEndOfTheFile()
    {
        var (server, client) = await PairAsync();
        await using var _ = server;
        await using var __ = client;
        var path = Path.Combine(Path.GetTempPath(), $"netswap-sendfile-{Guid.NewGuid():N}");
        try
        {
            // 6 MiB: more than a socket buffer, so the send waits for the reader at least once.
            var content = Pattern(6 << 20, 3);
            await File.WriteAllBytesAsync(path, content);
            using var file = File.OpenHandle(path);
            var header = new byte[] { 0xAA, 0xBB, 0xCC };
            const int past = 100000;
            var send = server.SendFileAsync(header, file, 4096, content.Length - 4096 + past, default).AsTask();
            var received = new byte[header.Length + content.Length - 4096 + past];
            await client.ReadExactlyAsync(received).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            await send.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(header, received[..3]);
            Assert.True(content.AsSpan(4096).SequenceEqual(received.AsSpan(3, content.Length - 4096)));
            Assert.True(received.AsSpan(3 + content.Length - 4096).IndexOfAnyExcept((byte)0) < 0);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
