using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Tests.Support;

/// <summary>A reply of the transmission phase, reassembled: error (0 on success), data of a READ, and any message.</summary>
public sealed record TestReply(ulong Cookie, NbdError Error, byte[] Data, string? Message, int Chunks, int HoleChunks)
{
    /// <summary>NBD_REPLY_TYPE_BLOCK_STATUS: the context ID and descriptors of each chunk.</summary>
    public List<(uint Context, NbdBlockDescriptor[] Extents)> BlockStatus { get; init; } = [];
}

/// <summary>
/// A deliberately literal NBD client for tests, built on the protocol types but with no knowledge of the server. It can
/// also send whatever bytes a hostile client would.
/// </summary>
public sealed class TestNbdClient : IAsyncDisposable
{
    private Stream _stream;
    // Concurrent: a pipelining test sends from one task and reads replies on another.
    private readonly ConcurrentDictionary<ulong, (uint Length, ulong Offset)> _reads = new();
    private ulong _nextCookie = 1;

    public TestNbdClient(Stream stream) => _stream = stream;

    public Stream Stream => _stream;
    public bool Structured { get; private set; }
    public ulong ExportSize { get; private set; }
    public NbdTransmissionFlags Flags { get; private set; }
    public NbdHandshakeFlags ServerFlags { get; private set; }

    public async Task ReadGreetingAsync()
    {
        var buffer = await ReadExactAsync(NbdNewstyleGreeting.Size);
        Assert.True(NbdNewstyleGreeting.TryRead(buffer, out var greeting));
        ServerFlags = greeting.Flags;
    }

    /// <summary>Greeting, then client flags (fixed newstyle + no zeroes unless told otherwise).</summary>
    public async Task StartAsync(NbdClientFlags flags = NbdClientFlags.FixedNewstyle | NbdClientFlags.NoZeroes)
    {
        await ReadGreetingAsync();
        var buffer = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(buffer, (uint)flags);
        await WriteAsync(buffer);
    }

    public async Task SendOptionAsync(NbdOption option, ReadOnlyMemory<byte> data)
    {
        var message = new byte[NbdOptionHeader.Size + data.Length];
        new NbdOptionHeader(option, (uint)data.Length).Write(message);
        data.Span.CopyTo(message.AsSpan(NbdOptionHeader.Size));
        await WriteAsync(message);
    }

    public async Task<(NbdOptionReplyHeader Header, byte[] Payload)> ReadOptionReplyAsync()
    {
        var header = await ReadExactAsync(NbdOptionReplyHeader.Size);
        Assert.True(NbdOptionReplyHeader.TryRead(header, out var reply));
        return (reply, await ReadExactAsync((int)reply.Length));
    }

    public async Task<NbdOptionReplyType> SimpleOptionAsync(NbdOption option, ReadOnlyMemory<byte> data = default)
    {
        await SendOptionAsync(option, data);
        var (header, _) = await ReadOptionReplyAsync();
        Assert.Equal(option, header.Option);
        return header.Type;
    }

    public async Task<bool> NegotiateStructuredRepliesAsync()
    {
        var type = await SimpleOptionAsync(NbdOption.StructuredReply);
        Structured = type == NbdOptionReplyType.Ack;
        return Structured;
    }

    /// <summary>Sends INFO or GO and collects every NBD_REP_INFO until the final reply.</summary>
    public async Task<InfoResult> InfoOrGoAsync(NbdOption option, string name, params NbdInfoType[] requests)
    {
        var request = new NbdInfoRequest(name, requests);
        var data = new byte[request.SerializedLength];
        request.Write(data);
        await SendOptionAsync(option, data);
        var result = new InfoResult();
        while (true)
        {
            var (header, payload) = await ReadOptionReplyAsync();
            Assert.Equal(option, header.Option);
            if (header.Type == NbdOptionReplyType.Info)
            {
                switch (NbdInfoReply.ReadType(payload))
                {
                    case NbdInfoType.Export:
                        Assert.True(NbdInfoReply.TryReadExport(payload, out var size, out var flags));
                        result.Size = size;
                        result.Flags = flags;
                        break;
                    case NbdInfoType.Name:
                        Assert.True(NbdInfoReply.TryReadString(payload, NbdInfoType.Name, out var n));
                        result.Name = n;
                        break;
                    case NbdInfoType.Description:
                        Assert.True(NbdInfoReply.TryReadString(payload, NbdInfoType.Description, out var d));
                        result.Description = d;
                        break;
                    case NbdInfoType.BlockSize:
                        Assert.True(NbdInfoReply.TryReadBlockSize(payload, out var min, out var pref, out var max));
                        result.BlockSize = (min, pref, max);
                        break;
                }
                continue;
            }
            result.Final = header.Type;
            result.Message = Encoding.UTF8.GetString(payload);
            if (option == NbdOption.Go && header.Type == NbdOptionReplyType.Ack)
            {
                ExportSize = result.Size;
                Flags = result.Flags;
            }
            return result;
        }
    }

    /// <summary>The usual way in: structured replies (optional), then GO; asserts success.</summary>
    public async Task GoAsync(string name, bool structured = true)
    {
        if (structured)
        {
            Assert.True(await NegotiateStructuredRepliesAsync());
        }
        var result = await InfoOrGoAsync(NbdOption.Go, name);
        Assert.Equal(NbdOptionReplyType.Ack, result.Final);
    }

    public async Task<ulong> SendRequestAsync(NbdCommand command, ulong offset, uint length, NbdCommandFlags flags = 0, ReadOnlyMemory<byte> payload = default, ulong? cookie = null)
    {
        var id = cookie ?? _nextCookie++;
        var message = new byte[NbdRequest.Size + payload.Length];
        new NbdRequest(flags, command, id, offset, length).Write(message);
        payload.Span.CopyTo(message.AsSpan(NbdRequest.Size));
        if (command == NbdCommand.Read)
        {
            _reads[id] = (length, offset);
        }
        await WriteAsync(message);
        return id;
    }

    /// <summary>For READs sent as raw bytes: the length their simple replies carry.</summary>
    public void ExpectRead(ulong cookie, uint length, ulong offset) => _reads[cookie] = (length, offset);

    /// <summary>Reads one complete reply (all chunks of a structured one), whichever request it answers.</summary>
    public async Task<TestReply> ReadReplyAsync()
    {
        var magic = BinaryPrimitives.ReadUInt32BigEndian(await PeekMagicAsync());
        if (magic == NbdMagic.SimpleReply)
        {
            var header = await ReadExactAsync(NbdSimpleReply.Size - 4, prefix: _peeked);
            Assert.True(NbdSimpleReply.TryRead(header, out var simple));
            var data = Array.Empty<byte>();
            if (_reads.TryRemove(simple.Cookie, out var read) && simple.Error == NbdError.None)
            {
                data = await ReadExactAsync((int)read.Length);
            }
            return new TestReply(simple.Cookie, simple.Error, data, null, 0, 0);
        }
        Assert.Equal(NbdMagic.StructuredReply, magic);
        return await ReadStructuredAsync(_peeked);
    }

    private byte[] _peeked = [];

    private async Task<byte[]> PeekMagicAsync()
    {
        _peeked = await ReadExactAsync(4);
        return _peeked;
    }

    private async Task<TestReply> ReadStructuredAsync(byte[] magic)
    {
        ulong cookie = 0;
        var error = NbdError.None;
        string? message = null;
        byte[]? data = null;
        var chunks = 0;
        var holes = 0;
        var first = true;
        var status = new List<(uint, NbdBlockDescriptor[])>();
        while (true)
        {
            var headerBytes = first ? await ReadExactAsync(NbdStructuredReplyHeader.Size - 4, prefix: magic) : await ReadExactAsync(NbdStructuredReplyHeader.Size);
            first = false;
            Assert.True(NbdStructuredReplyHeader.TryRead(headerBytes, out var header));
            cookie = header.Cookie;
            var payload = await ReadExactAsync((int)header.Length);
            chunks++;
            _reads.TryGetValue(cookie, out var read);
            data ??= new byte[read.Length];
            switch (header.Type)
            {
                case NbdReplyType.OffsetData:
                    var offset = BinaryPrimitives.ReadUInt64BigEndian(payload);
                    Assert.InRange(offset, read.Offset, read.Offset + read.Length);
                    payload.AsSpan(8).CopyTo(data.AsSpan((int)(offset - read.Offset)));
                    break;
                case NbdReplyType.OffsetHole:
                    Assert.True(NbdChunk.TryReadOffsetHole(payload, out var holeOffset, out var holeLength));
                    Assert.InRange(holeOffset + holeLength, read.Offset, read.Offset + read.Length);
                    holes++;
                    break;
                case NbdReplyType.None:
                    Assert.Empty(payload);
                    break;
                case NbdReplyType.BlockStatus:
                    Assert.True(NbdBlockStatusChunk.TryRead(payload, out var context, out var extents), "malformed NBD_REPLY_TYPE_BLOCK_STATUS");
                    status.Add((context, extents));
                    break;
                default:
                    Assert.True(header.IsError, $"unexpected chunk type {header.Type}");
                    Assert.True(NbdChunk.TryReadError(payload, out error, out var text));
                    message = text;
                    break;
            }
            if ((header.Flags & NbdReplyFlags.Done) != 0)
            {
                _reads.TryRemove(cookie, out _);
                return new TestReply(cookie, error, error == NbdError.None ? data : [], message, chunks, holes) { BlockStatus = status };
            }
        }
        // Later chunks of one reply may interleave with other replies in general; this server never does that for one
        // request's chunks except under the writer lock, which the assertions above would catch.
    }

    public async Task<TestReply> RequestAsync(NbdCommand command, ulong offset, uint length, NbdCommandFlags flags = 0, ReadOnlyMemory<byte> payload = default)
    {
        var cookie = await SendRequestAsync(command, offset, length, flags, payload);
        var reply = await ReadReplyAsync();
        Assert.Equal(cookie, reply.Cookie);
        return reply;
    }

    /// <summary>NBD_OPT_STARTTLS, then a TLS client handshake (any server certificate accepted) with an optional client certificate.</summary>
    public async Task<NbdOptionReplyType> StartTlsAsync(System.Security.Cryptography.X509Certificates.X509Certificate2? clientCertificate = null)
    {
        var reply = await SimpleOptionAsync(NbdOption.StartTls);
        if (reply != NbdOptionReplyType.Ack)
        {
            return reply;
        }
        var ssl = new System.Net.Security.SslStream(_stream, leaveInnerStreamOpen: false, (_, _, _, _) => true);
        await ssl.AuthenticateAsClientAsync(new System.Net.Security.SslClientAuthenticationOptions
        {
            TargetHost = "netswap.test",
            ClientCertificates = clientCertificate is null ? null : [clientCertificate],
        });
        _stream = ssl;
        return reply;
    }

    public async Task WriteAsync(ReadOnlyMemory<byte> bytes)
    {
        await _stream.WriteAsync(bytes);
        await _stream.FlushAsync();
    }

    /// <summary>
    /// How long one read of a reply may wait (a watchdog: a server that stalls fails the test, naming what it still owes,
    /// instead of hanging the run).
    /// </summary>
    public TimeSpan ReadDeadline { get; set; } = TimeSpan.FromSeconds(10);

    public async Task<byte[]> ReadExactAsync(int count, byte[]? prefix = null)
    {
        var skip = prefix?.Length ?? 0;
        var buffer = new byte[skip + count];
        prefix?.CopyTo(buffer, 0);
        using var deadline = new CancellationTokenSource(ReadDeadline);
        try
        {
            await _stream.ReadExactlyAsync(buffer.AsMemory(skip), deadline.Token);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            throw new TimeoutException($"no reply for {ReadDeadline.TotalSeconds} s; READs still unanswered: [{string.Join(", ", _reads.Keys.Order())}]");
        }
        return buffer;
    }

    /// <summary>True when the server has closed the connection (reads return end of stream).</summary>
    public async Task<bool> IsClosedAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var buffer = new byte[1];
        try
        {
            while (true)
            {
                var n = await _stream.ReadAsync(buffer, cts.Token);
                if (n == 0)
                {
                    return true;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (IOException)
        {
            return true;
        }
    }

    public async ValueTask DisposeAsync() => await _stream.DisposeAsync();
}

public sealed class InfoResult
{
    public ulong Size { get; set; }
    public NbdTransmissionFlags Flags { get; set; }
    public string? Name { get; set; }
    public string? Description { get; set; }
    public (uint Min, uint Preferred, uint Max)? BlockSize { get; set; }
    public NbdOptionReplyType Final { get; set; }
    public string Message { get; set; } = "";
}
