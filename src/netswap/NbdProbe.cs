using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Client;

/// <summary>An export as a server describes it in NBD_OPT_LIST and NBD_OPT_INFO.</summary>
internal sealed record ExportDescription(string Name, ulong Size, NbdTransmissionFlags Flags, string? Description);

/// <summary>
/// Just enough of an NBD client to ask a server what it offers (LIST, then INFO per export, then ABORT), and for the
/// reconnect keeper to open a swap export again (GO) and read one block back before the kernel takes the connection
/// over. The data path is the kernel's, through nbd-client or the keeper's netlink hand-over.
/// </summary>
internal sealed class NbdProbe : IAsyncDisposable
{
    private readonly Stream _stream;

    private NbdProbe(Stream stream) => _stream = stream;

    /// <summary>A handshake over a connection the caller made (and keeps: disposing the probe does not close it).</summary>
    public static async Task<NbdProbe> OverAsync(Stream stream, CancellationToken cancellationToken)
    {
        var probe = new NbdProbe(stream) { _borrowed = true };
        await probe.StartAsync(cancellationToken);
        return probe;
    }

    private bool _borrowed;

    /// <summary>
    /// A probe that goes on with the option negotiation over <paramref name="stream"/>: the TLS session the caller
    /// runs after <see cref="StartTlsAsync"/> (the greeting is behind it; disposing the probe does not close it).
    /// </summary>
    public static NbdProbe Resume(Stream stream) => new(stream) { _borrowed = true };

    /// <summary>NBD_OPT_STARTTLS: after the acknowledgement the next bytes on the connection are the TLS handshake.</summary>
    public async Task StartTlsAsync(CancellationToken cancellationToken)
    {
        await SendOptionAsync(NbdOption.StartTls, default, cancellationToken);
        var (header, payload) = await ReadReplyAsync(NbdOption.StartTls, cancellationToken);
        if (header.Type != NbdOptionReplyType.Ack)
        {
            throw new NbdProtocolException(header.Type == NbdOptionReplyType.ErrPolicy
                ? "the server does not offer TLS (it answered STARTTLS with ERR_POLICY)"
                : $"the server refused STARTTLS: {header.Type} {System.Text.Encoding.UTF8.GetString(payload)}");
        }
    }

    public static async Task<NbdProbe> ConnectAsync(IPEndPoint server, CancellationToken cancellationToken)
    {
        var socket = new Socket(server.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(server, cancellationToken);
            var probe = new NbdProbe(new NetworkStream(socket, ownsSocket: true));
            await probe.StartAsync(cancellationToken);
            return probe;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private async Task StartAsync(CancellationToken cancellationToken)
    {
        var greeting = new byte[NbdNewstyleGreeting.Size];
        await _stream.ReadExactlyAsync(greeting, cancellationToken);
        if (!NbdNewstyleGreeting.TryRead(greeting, out var parsed) || (parsed.Flags & NbdHandshakeFlags.FixedNewstyle) == 0)
        {
            throw new NbdProtocolException("server does not speak fixed newstyle NBD");
        }
        var flags = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(flags, (uint)(NbdClientFlags.FixedNewstyle | (parsed.Flags & NbdHandshakeFlags.NoZeroes) switch
        {
            0 => NbdClientFlags.None,
            _ => NbdClientFlags.NoZeroes,
        }));
        await _stream.WriteAsync(flags, cancellationToken);
    }

    public async Task<List<ExportDescription>> ListAsync(CancellationToken cancellationToken)
    {
        await SendOptionAsync(NbdOption.List, default, cancellationToken);
        var names = new List<string>();
        while (true)
        {
            var (header, payload) = await ReadReplyAsync(NbdOption.List, cancellationToken);
            if (header.Type == NbdOptionReplyType.Server && NbdServerReply.TryRead(payload, out var name, out _))
            {
                names.Add(name);
                continue;
            }
            if (header.IsError)
            {
                throw new NbdProtocolException($"server refused to list exports: {header.Type} {System.Text.Encoding.UTF8.GetString(payload)}");
            }
            break;
        }
        var exports = new List<ExportDescription>();
        foreach (var name in names)
        {
            exports.Add(await InfoAsync(name, cancellationToken) ?? new ExportDescription(name, 0, 0, null));
        }
        return exports;
    }

    public async Task<ExportDescription?> InfoAsync(string name, CancellationToken cancellationToken)
    {
        var request = new NbdInfoRequest(name, [NbdInfoType.Description]);
        var data = new byte[request.SerializedLength];
        request.Write(data);
        await SendOptionAsync(NbdOption.Info, data, cancellationToken);
        ulong size = 0;
        NbdTransmissionFlags flags = 0;
        string? description = null;
        while (true)
        {
            var (header, payload) = await ReadReplyAsync(NbdOption.Info, cancellationToken);
            if (header.Type == NbdOptionReplyType.Info)
            {
                if (NbdInfoReply.TryReadExport(payload, out var s, out var f))
                {
                    (size, flags) = (s, f);
                }
                else if (NbdInfoReply.TryReadString(payload, NbdInfoType.Description, out var d))
                {
                    description = d;
                }
                continue;
            }
            return header.Type == NbdOptionReplyType.Ack ? new ExportDescription(name, size, flags, description) : null;
        }
    }

    /// <summary>
    /// NBD_OPT_GO without structured replies (the kernel's client does not negotiate them): the export's size and
    /// flags; a refusal throws with the server's message. The connection is then in transmission.
    /// </summary>
    public async Task<(ulong Size, NbdTransmissionFlags Flags)> GoAsync(string name, CancellationToken cancellationToken)
    {
        var request = new NbdInfoRequest(name, []);
        var data = new byte[request.SerializedLength];
        request.Write(data);
        await SendOptionAsync(NbdOption.Go, data, cancellationToken);
        ulong size = 0;
        NbdTransmissionFlags flags = 0;
        var sawExport = false;
        while (true)
        {
            var (header, payload) = await ReadReplyAsync(NbdOption.Go, cancellationToken);
            if (header.Type == NbdOptionReplyType.Info)
            {
                if (NbdInfoReply.TryReadExport(payload, out var s, out var f))
                {
                    (size, flags, sawExport) = (s, f, true);
                }
                continue;
            }
            if (header.Type == NbdOptionReplyType.Ack && sawExport)
            {
                return (size, flags);
            }
            throw new NbdProtocolException(header.IsError
                ? $"server refused '{name}': {header.Type} {System.Text.Encoding.UTF8.GetString(payload)}"
                : $"server answered GO for '{name}' without the export's size");
        }
    }

    /// <summary>NBD_CMD_READ with a simple reply (transmission, after <see cref="GoAsync"/>).</summary>
    public async Task ReadAsync(ulong offset, Memory<byte> destination, CancellationToken cancellationToken)
    {
        var request = new byte[NbdRequest.Size];
        new NbdRequest(0, NbdCommand.Read, 0x6e73, offset, (uint)destination.Length).Write(request);
        await _stream.WriteAsync(request, cancellationToken);
        var reply = new byte[NbdSimpleReply.Size];
        await _stream.ReadExactlyAsync(reply, cancellationToken);
        if (!NbdSimpleReply.TryRead(reply, out var parsed) || parsed.Cookie != 0x6e73)
        {
            throw new NbdProtocolException("the server's reply to a read is not a simple reply to it");
        }
        if (parsed.Error != 0)
        {
            throw new NbdProtocolException($"the server failed a read at {offset}: {parsed.Error}");
        }
        await _stream.ReadExactlyAsync(destination, cancellationToken);
    }

    /// <summary>NBD_CMD_DISC: the server ends the connection cleanly (and destroys a swap area at once).</summary>
    public async Task DisconnectAsync(CancellationToken cancellationToken)
    {
        var request = new byte[NbdRequest.Size];
        new NbdRequest(0, NbdCommand.Disc, 0x6e74, 0, 0).Write(request);
        await _stream.WriteAsync(request, cancellationToken);
    }

    private async Task SendOptionAsync(NbdOption option, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var message = new byte[NbdOptionHeader.Size + data.Length];
        new NbdOptionHeader(option, (uint)data.Length).Write(message);
        data.Span.CopyTo(message.AsSpan(NbdOptionHeader.Size));
        await _stream.WriteAsync(message, cancellationToken);
    }

    private async Task<(NbdOptionReplyHeader Header, byte[] Payload)> ReadReplyAsync(NbdOption option, CancellationToken cancellationToken)
    {
        var header = new byte[NbdOptionReplyHeader.Size];
        await _stream.ReadExactlyAsync(header, cancellationToken);
        NbdOptionReplyHeader.TryRead(header, out var reply);
        if (reply.Option != option || reply.Length > NbdLimits.MaxOptionLength)
        {
            throw new NbdProtocolException($"unexpected reply to {option}");
        }
        var payload = new byte[reply.Length];
        await _stream.ReadExactlyAsync(payload, cancellationToken);
        return (reply, payload);
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            await SendOptionAsync(NbdOption.Abort, default, cts.Token);
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException)
        {
        }
        if (!_borrowed)
        {
            await _stream.DisposeAsync();
        }
    }
}
