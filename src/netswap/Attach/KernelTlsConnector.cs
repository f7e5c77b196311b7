using NetSwap.Client.Kernel;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Client.Attach;

/// <summary>Connects an NBD device to a swap export over kernel TLS; what the connection is, for the log line.</summary>
internal interface IKernelConnector
{
    Task<string> ConnectAsync(string device, AttachRequest request, string export, CancellationToken cancellationToken);
}

/// <summary>
/// attach --tls: what nbd-client does in netlink mode, done here because nbd-client's TLS relays every byte through
/// its own process. Connect, STARTTLS, the TLS 1.3 handshake, NBD_OPT_GO inside TLS, the keys into the socket
/// (kernel TLS), then NBD_CMD_CONNECT with that socket: from then on only the kernel touches the connection.
/// </summary>
internal sealed class KernelTlsConnector : IKernelConnector
{
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    public async Task<string> ConnectAsync(string device, AttachRequest request, string export, CancellationToken cancellationToken)
    {
        if (!NbdNetlink.TryParseIndex(device, out var index))
        {
            throw new AttachException($"{device} is not /dev/nbdN");
        }
        try
        {
            using var context = request.Tls is null ? null : Tls.TlsClientContext.Create(request.Tls);
            using var connection = await KernelBoundConnection.OpenAsync(request.Server, context, ConnectTimeout, cancellationToken);
            var (size, flags) = await connection.Probe.GoAsync(export, cancellationToken);
            connection.PrepareForKernel();
            using var netlink = NbdNetlink.Open();
            netlink.Connect(index, connection.Socket.Descriptor, size, (ulong)flags, request.IoTimeout,
                request.Mode == NbdClientMode.Reconnect ? request.ReconnectFor : null);
            return connection.Security;
        }
        catch (Tls.TlsUntrustedServerException e)
        {
            throw new UntrustedServerException($"{e.Message}, at {request.Server}");
        }
        catch (System.Net.Sockets.SocketException e)
        {
            // Before NBD_CMD_CONNECT: nothing is set up, so another server may be tried.
            throw new UnreachableServerException($"cannot connect {device} to {request.Server} over TLS: {e.Message}");
        }
        catch (Exception e) when (e is IOException or NbdProtocolException)
        {
            // The handshake failed (no NetSwap server there, STARTTLS or the export refused): still nothing set up.
            throw new NegotiationFailedException($"cannot connect {device} to {request.Server} over TLS: {e.Message}");
        }
        catch (NetlinkException e)
        {
            throw new AttachException($"cannot connect {device} to {request.Server} over TLS: {e.Message}");
        }
    }
}
