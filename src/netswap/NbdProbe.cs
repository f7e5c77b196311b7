using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Client;

/// <summary>An export as a server describes it in NBD_OPT_LIST and NBD_OPT_INFO.</summary>
internal sealed record ExportDescription(string Name, ulong Size, NbdTransmissionFlags Flags, string? Description);

/// <summary>
/// Just enough of an NBD client to ask a server what it offers (LIST, then INFO per export, then ABORT). Attaching a
/// device is the kernel's job through nbd-client; this never enters the transmission phase.
/// </summary>
internal sealed class NbdProbe : IAsyncDisposable
{
    private readonly NetworkStream _stream;

    private NbdProbe(NetworkStream stream) => _stream = stream;

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
        await _stream.DisposeAsync();
    }
}
