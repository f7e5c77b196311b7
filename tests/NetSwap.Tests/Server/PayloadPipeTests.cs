using NetSwap.Protocol.Nbd;
using NetSwap.Server.Exports;
using NetSwap.Server.Transmission;
using NetSwap.Server.Transport;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Server;

/// <summary>
/// WRITE payloads that wait in a pipe: spliced from a real loopback socket behind bytes the reader had buffered, with
/// the stream in step afterwards; a pipe that fills before the payload's end (small segments fill its slots) gives
/// back what it took so the rest can be read as usual; and from the pipe into a file at an offset.
/// </summary>
public class PayloadPipeTests
{
    /// <summary>Sends a 28-byte "header", <paramref name="payload"/> and a trailer; reads the header (the reader then holds
    /// some of the payload), the payload into a pipe of <paramref name="pipeSize"/> (the rest as a buffer when it fills),
    /// then the trailer. Returns the bytes the pipe took.</summary>
    private static async Task<int> ReceiveAsync(int pipeSize, byte[] payload)
    {
        var (server, client) = await ReactorStreamTests.PairAsync();
        await using var _ = server;
        await using var __ = client;
        using var reader = new NbdStreamReader(server, server);
        var header = new byte[28];
        var trailer = "after the payload"u8.ToArray();
        var send = Task.Run(async () =>
        {
            await client.WriteAsync(header.Select((_, i) => (byte)i).ToArray());
            // In pieces, so the pipe meets both buffered bytes and bytes that arrive later.
            for (var at = 0; at < payload.Length; at += 40_000)
            {
                await client.WriteAsync(payload.AsMemory(at, Math.Min(40_000, payload.Length - at)));
                await Task.Delay(5);
            }
            await client.WriteAsync(trailer);
        });
        await reader.ReadExactlyAsync(header, default);
        Assert.Equal(27, header[27]);
        using var pipe = PayloadPipe.TryCreate(pipeSize, out var errno);
        Assert.True(pipe is not null, $"no pipe: errno {errno}");
        var got = await reader.ReadIntoPipeAsync(pipe!, payload.Length, default).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(got, pipe!.Held);
        var received = new byte[payload.Length];
        pipe.DrainInto(received);
        Assert.Equal(0, pipe.Held);
        await reader.ReadExactlyAsync(received.AsMemory(got), default);
        Assert.True(payload.AsSpan().SequenceEqual(received), "the payload came through changed");
        var after = new byte[trailer.Length];
        await reader.ReadExactlyAsync(after, default);
        Assert.Equal(trailer, after);
        await send.WaitAsync(TimeSpan.FromSeconds(30));
        return got;
    }

    [Fact]
    public async Task APayload_GoesIntoThePipeWhole_BehindWhatTheReaderHeld_AndTheStreamStaysInStep()
    {
        var payload = new byte[200 * 1024];
        new Random(7).NextBytes(payload);
        Assert.Equal(payload.Length, await ReceiveAsync(256 * 1024, payload));
    }

    [Fact]
    public async Task APipeThatFillsEarly_GivesBackWhatItTook_AndTheRestIsReadAsUsual()
    {
        var payload = new byte[200 * 1024];
        new Random(8).NextBytes(payload);
        // One page: full after the first segment or two.
        var got = await ReceiveAsync(4096, payload);
        Assert.InRange(got, 1, payload.Length - 1);
    }

    [Fact]
    public async Task AServerConnection_WhosePayloadsComeInTinySegments_FinishesThemInBuffers_WhileAnotherUsesPipes_AndEveryByteIsRight()
    {
        // Tiny segments (each send its own, spliced one at a time) fill a pipe's slots long before its bytes: the
        // request must finish in a buffer, and that connection go on with buffers, while a neighbour keeps its pipes.
        await using var server = await ServerHarness.StartAsync(("disk", 8L << 20, false));
        await using var slow = await server.ConnectAsync();
        await using var fast = await server.ConnectAsync();
        foreach (var client in new[] { slow, fast })
        {
            await client.StartAsync();
            await client.GoAsync("disk", structured: false);
        }
        var filledBefore = PayloadPipes.FilledEarly;
        var model = new byte[8 << 20];
        async Task WriteAsync(TestNbdClient client, int offset, int length, bool dribble)
        {
            var data = new byte[length];
            new Random(offset).NextBytes(data);
            data.CopyTo(model, offset);
            var message = new byte[NbdRequest.Size + length];
            new NbdRequest(0, NbdCommand.Write, (ulong)offset, (ulong)offset, (uint)length).Write(message);
            data.CopyTo(message, NbdRequest.Size);
            for (var at = 0; at < message.Length; at += dribble ? 512 : message.Length)
            {
                await client.WriteAsync(message.AsMemory(at, Math.Min(dribble ? 512 : message.Length, message.Length - at)));
                if (dribble && at % 4096 == 0)
                {
                    await Task.Delay(1);
                }
            }
        }
        var slowSide = Task.Run(async () =>
        {
            for (var i = 0; i < 4; i++)
            {
                await WriteAsync(slow, i * (128 << 10), 128 << 10, dribble: i == 0);
            }
            for (var i = 0; i < 4; i++)
            {
                Assert.Equal(NbdError.None, (await slow.ReadReplyAsync()).Error);
            }
        });
        var fastSide = Task.Run(async () =>
        {
            for (var i = 0; i < 16; i++)
            {
                await WriteAsync(fast, (4 << 20) + i * (192 << 10), 192 << 10, dribble: false);
            }
            for (var i = 0; i < 16; i++)
            {
                Assert.Equal(NbdError.None, (await fast.ReadReplyAsync()).Error);
            }
        });
        await Task.WhenAll(slowSide, fastSide).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(PayloadPipes.FilledEarly > filledBefore, "the tiny segments never filled a pipe: the fallback was not exercised");
        foreach (var (client, offset, length) in new[] { (slow, 0, 512 << 10), (fast, 4 << 20, 16 * (192 << 10)) })
        {
            var reply = await client.RequestAsync(NbdCommand.Read, (ulong)offset, (uint)length);
            Assert.True(model.AsSpan(offset, length).SequenceEqual(reply.Data), "data written came back changed");
        }
    }

    [Fact]
    public async Task FromThePipe_IntoAFileAtAnOffset_AllOfIt()
    {
        var path = Path.Combine(Scratch.Directory("netswap-pipe-"), "file");
        using var file = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite);
        using var pipe = PayloadPipe.TryCreate(128 * 1024, out _);
        var data = new byte[100_000];
        new Random(9).NextBytes(data);
        Assert.Equal(data.Length, pipe!.Append(data));
        Assert.Equal(0, LinuxFile.SpliceExactly(pipe.ReadEnd, file, 4096, data.Length, out var moved));
        Assert.Equal(data.Length, moved);
        var back = new byte[data.Length];
        Assert.Equal(0, LinuxFile.ReadExactly(file, back, 4096));
        Assert.Equal(data, back);
        // Asking for more than the pipe holds is an error, never a wait.
        Assert.Equal(LinuxFile.EIO, LinuxFile.SpliceExactly(pipe.ReadEnd, file, 0, 10, out _));
    }
}
