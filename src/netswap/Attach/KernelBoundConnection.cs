using System.Net;
using NetSwap.Client.Kernel;
using NetSwap.Client.Tls;

namespace NetSwap.Client.Attach;

/// <summary>
/// A connection opened to be handed to the kernel's NBD driver: plain, or TLS 1.3 that becomes kernel TLS at the
/// hand-over. Option negotiation runs over <see cref="Probe"/> either way; <see cref="PrepareForKernel"/> then leaves a
/// socket that the driver can read and write as it is, with no process in between.
/// </summary>
internal sealed class KernelBoundConnection : IDisposable
{
    private readonly TlsClient? _tls;

    private KernelBoundConnection(KernelSocket socket, NbdProbe probe, TlsClient? tls)
    {
        Socket = socket;
        Probe = probe;
        _tls = tls;
    }

    public KernelSocket Socket { get; }

    public NbdProbe Probe { get; }

    /// <summary>What the connection is, for log lines: "TLS 1.3 (TLS_AES_128_GCM_SHA256)" or "plain".</summary>
    public string Security => _tls is null ? "plain" : $"TLS 1.3 ({CipherSuiteName(_tls.CipherSuite)}, kernel TLS)";

    /// <summary>Connects and negotiates up to the options; with <paramref name="tls"/>, STARTTLS and the TLS handshake first.</summary>
    public static async Task<KernelBoundConnection> OpenAsync(IPEndPoint server, TlsClientContext? tls, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var socket = KernelSocket.Connect(server, timeout);
        TlsClient? session = null;
        try
        {
            var probe = await NbdProbe.OverAsync(socket, cancellationToken);
            if (tls is null)
            {
                return new KernelBoundConnection(socket, probe, null);
            }
            await probe.StartTlsAsync(cancellationToken);
            session = TlsClient.Handshake(socket, tls);
            return new KernelBoundConnection(socket, NbdProbe.Resume(session), session);
        }
        catch
        {
            session?.Dispose();
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Moves the TLS session's keys into the socket (kernel TLS) and clears the time-outs.</summary>
    public void PrepareForKernel()
    {
        if (_tls is not null)
        {
            var (transmit, receive) = _tls.TakeKeys();
            try
            {
                KernelTls.Install(Socket.Descriptor, transmit, receive);
            }
            finally
            {
                System.Security.Cryptography.CryptographicOperations.ZeroMemory(transmit.Key);
                System.Security.Cryptography.CryptographicOperations.ZeroMemory(receive.Key);
            }
        }
        Socket.PrepareForKernel();
    }

    /// <summary>Derives the traffic keys as <see cref="PrepareForKernel"/> does, and forgets them (the keeper's rehearsal).</summary>
    public void RehearseKeys()
    {
        if (_tls is not null)
        {
            var (transmit, receive) = _tls.TakeKeys();
            System.Security.Cryptography.CryptographicOperations.ZeroMemory(transmit.Key);
            System.Security.Cryptography.CryptographicOperations.ZeroMemory(receive.Key);
        }
    }

    public static string CipherSuiteName(ushort suite) => suite switch
    {
        TlsClient.Aes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
        TlsClient.Aes256GcmSha384 => "TLS_AES_256_GCM_SHA384",
        TlsClient.ChaCha20Poly1305Sha256 => "TLS_CHACHA20_POLY1305_SHA256",
        _ => $"cipher suite 0x{suite:x4}",
    };

    /// <summary>Closes this process's descriptor; a socket handed to the kernel stays open for the kernel.</summary>
    public void Dispose()
    {
        _tls?.Dispose();
        Socket.Dispose();
    }
}
