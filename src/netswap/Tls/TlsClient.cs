using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace NetSwap.Client.Tls;

/// <summary>The site's TLS credentials on a client: the CA that signs servers, and this machine's key pair.</summary>
internal sealed record TlsCredentials(string CaFile, string? CertificateFile, string? KeyFile)
{
    /// <summary>Where the defaults of netswap and client.conf look: the client's directory netswap-make-certs wrote, copied here.</summary>
    public const string DefaultDirectory = "/etc/netswap/tls/client";

    /// <summary>The directory the files came from, which the reconnect keeper is given.</summary>
    public string? Directory { get; init; }

    /// <summary>The directory layout netswap-make-certs writes for a client (ca-cert.pem, client-cert.pem, client-key.pem).</summary>
    public static TlsCredentials FromDirectory(string directory)
    {
        var ca = Path.Combine(directory, "ca-cert.pem");
        if (!File.Exists(ca))
        {
            throw new UsageException($"TLS credentials: {directory} has no ca-cert.pem (the site CA that signs the servers; netswap-make-certs writes it with client-cert.pem and client-key.pem)");
        }
        var certificate = Path.Combine(directory, "client-cert.pem");
        var key = Path.Combine(directory, "client-key.pem");
        return (File.Exists(certificate) && File.Exists(key) ? new TlsCredentials(ca, certificate, key) : new TlsCredentials(ca, null, null)) with { Directory = directory };
    }
}

/// <summary>The server is not the one the site's CA vouches for: try another, never this one.</summary>
internal sealed class TlsUntrustedServerException(string message) : IOException(message);

/// <summary>One direction's TLS 1.3 traffic keys after the handshake, with the sequence number of the next record.</summary>
internal sealed record TrafficKeys(ushort CipherSuite, byte[] Key, byte[] Iv, ulong Sequence);

/// <summary>
/// A TLS 1.3 client over a connection it reads one record at a time, so that after the NBD negotiation it can say
/// exactly where each direction's record stream stands and hand the keys to the kernel (kernel TLS): the traffic
/// secrets come from OpenSSL's key log callback, the sequence numbers from counting the records that went each way
/// under them. Nothing is ever read past the last record OpenSSL asked for, so the next byte on the socket is the
/// start of the next record, as the kernel expects.
/// </summary>
internal sealed unsafe class TlsClient : Kernel.BlockingStream
{
    public const ushort Aes128GcmSha256 = 0x1301;
    public const ushort Aes256GcmSha384 = 0x1302;
    public const ushort ChaCha20Poly1305Sha256 = 0x1303;
    private const int RecordHeader = 5;
    // TLS 1.3's largest record (2^14 + 256); TLS 1.2's allowance (2^14 + 2048) is never needed here.
    private const int MaxRecordBody = 16384 + 2048;

    private static readonly Lock s_sessionsLock = new();
    private static readonly Dictionary<nint, TlsClient> s_sessions = [];

    private readonly Stream _transport;
    private readonly TlsClientContext? _ownedContext;
    private readonly nint _ssl;
    private readonly nint _readBio;
    private readonly nint _writeBio;
    private readonly byte[] _record = new byte[RecordHeader + MaxRecordBody];
    private bool _established;
    private ulong _recordsSent;
    private ulong _recordsReceived;
    private byte[]? _clientSecret;
    private byte[]? _serverSecret;
    private string? _postHandshakeMessage;
    private bool _receivedData;

    private TlsClient(Stream transport, TlsClientContext? ownedContext, nint ssl, nint readBio, nint writeBio)
    {
        _transport = transport;
        _ownedContext = ownedContext;
        _ssl = ssl;
        _readBio = readBio;
        _writeBio = writeBio;
        lock (s_sessionsLock)
        {
            s_sessions[ssl] = this;
        }
    }

    /// <summary>
    /// The cipher suites to offer. A CPU without AES instructions (an old thin client) offers ChaCha20-Poly1305 alone:
    /// the kernel then encrypts every swapped page with it, and software AES-GCM costs it far more; offering the others
    /// as well would leave the choice to the server, and OpenSSL servers (netswapd's SslStream among them) pick by their
    /// own order, AES-GCM first.
    /// </summary>
    public static string CipherSuites(bool cpuHasAes) => cpuHasAes
        ? "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
        : "TLS_CHACHA20_POLY1305_SHA256";

    public static bool CpuHasAes()
    {
        try
        {
            return File.ReadLines("/proc/cpuinfo").Any(l => l.StartsWith("flags", StringComparison.Ordinal) && l.Split(' ').Contains("aes"));
        }
        catch (IOException)
        {
            return true;
        }
    }

    /// <summary>
    /// TLS 1.3 over <paramref name="transport"/> (right after the server's NBD_OPT_STARTTLS acknowledgement), verifying
    /// the server against the site CA and presenting this machine's certificate when there is one. A context of its own,
    /// freed with the session.
    /// </summary>
    public static TlsClient Handshake(Stream transport, TlsCredentials credentials, string? cipherSuites = null)
    {
        var context = TlsClientContext.Create(credentials, cipherSuites);
        try
        {
            return Handshake(transport, context, ownsContext: true);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>TLS 1.3 over <paramref name="transport"/> with a context made before (the keeper's, made once).</summary>
    public static TlsClient Handshake(Stream transport, TlsClientContext context, bool ownsContext = false)
    {
        OpenSsl.ERR_clear_error();
        var ssl = OpenSsl.SSL_new(context.Handle);
        var readBio = OpenSsl.BIO_new(OpenSsl.BIO_s_mem());
        var writeBio = OpenSsl.BIO_new(OpenSsl.BIO_s_mem());
        if (ssl == 0 || readBio == 0 || writeBio == 0)
        {
            FreeBio(readBio);
            FreeBio(writeBio);
            if (ssl != 0)
            {
                OpenSsl.SSL_free(ssl);
            }
            throw new IOException("cannot set up TLS: " + OpenSsl.Errors("out of memory"));
        }
        // The SSL object owns both BIOs from here on, and the client owns the SSL object.
        OpenSsl.SSL_set_bio(ssl, readBio, writeBio);
        OpenSsl.SSL_set_connect_state(ssl);
        var client = new TlsClient(transport, ownsContext ? context : null, ssl, readBio, writeBio);
        try
        {
            client.RunHandshake(context.Credentials);
            return client;
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    private static void FreeBio(nint bio)
    {
        if (bio != 0)
        {
            _ = OpenSsl.BIO_free(bio);
        }
    }

    internal static void Require(int result, string what)
    {
        if (result != 1)
        {
            throw new IOException($"cannot use {what}: {OpenSsl.Errors("OpenSSL refused it")}");
        }
    }

    private void RunHandshake(TlsCredentials credentials)
    {
        while (true)
        {
            var result = OpenSsl.SSL_do_handshake(_ssl);
            Flush();
            if (result == 1)
            {
                break;
            }
            var error = OpenSsl.SSL_get_error(_ssl, result);
            if (error == OpenSsl.SslErrorWantRead)
            {
                if (!ReceiveRecord())
                {
                    throw new IOException("the server closed the connection during the TLS handshake");
                }
                continue;
            }
            var verify = OpenSsl.SSL_get_verify_result(_ssl);
            if (verify != 0)
            {
                throw new TlsUntrustedServerException($"the server's certificate is not trusted: {OpenSsl.VerifyError(verify)} (CA {credentials.CaFile})");
            }
            throw new IOException("the TLS handshake failed: " + OpenSsl.Errors($"OpenSSL error {error}"));
        }
        _established = true;
        if (_clientSecret is null || _serverSecret is null)
        {
            throw new IOException("the TLS handshake gave no traffic secrets (is this OpenSSL 1.1.1 or later?)");
        }
    }

    /// <summary>The key log and message callbacks every session of a context reports through.</summary>
    internal static void SetCallbacks(nint context)
    {
        OpenSsl.SSL_CTX_set_keylog_callback(context, &OnKeyLog);
        OpenSsl.SSL_CTX_set_msg_callback(context, &OnMessage);
    }

    [UnmanagedCallersOnly]
    private static void OnKeyLog(nint ssl, byte* line)
    {
        // "CLIENT_TRAFFIC_SECRET_0 <client random> <secret>", hex (the NSS key log format).
        var text = Marshal.PtrToStringUTF8((nint)line) ?? "";
        var fields = text.Split(' ');
        if (fields.Length != 3 || Session(ssl) is not { } session)
        {
            return;
        }
        if (fields[0] == "CLIENT_TRAFFIC_SECRET_0")
        {
            session._clientSecret = Convert.FromHexString(fields[2]);
        }
        else if (fields[0] == "SERVER_TRAFFIC_SECRET_0")
        {
            session._serverSecret = Convert.FromHexString(fields[2]);
        }
    }

    [UnmanagedCallersOnly]
    private static void OnMessage(int written, int version, int contentType, byte* message, nuint length, nint ssl, nint argument)
    {
        if (written != 0 || contentType != OpenSsl.ContentTypeHandshake || length == 0 || Session(ssl) is not { _established: true } session)
        {
            return;
        }
        // After the handshake only NewSessionTicket (4) is harmless; a KeyUpdate (24) would change the keys the
        // kernel is about to take, and anything else is not TLS 1.3 as the kernel's NBD driver can carry it.
        if (message[0] != 4)
        {
            session._postHandshakeMessage ??= message[0] == 24 ? "a KeyUpdate" : $"handshake message {message[0]}";
        }
    }

    private static TlsClient? Session(nint ssl)
    {
        lock (s_sessionsLock)
        {
            return s_sessions.GetValueOrDefault(ssl);
        }
    }

    /// <summary>Reads one whole record from the connection into OpenSSL; false at the end of the connection.</summary>
    private bool ReceiveRecord()
    {
        var header = _record.AsSpan(0, RecordHeader);
        var got = 0;
        while (got < RecordHeader)
        {
            var n = _transport.Read(header[got..]);
            if (n == 0)
            {
                if (got == 0)
                {
                    return false;
                }
                throw new EndOfStreamException("the server closed the connection in the middle of a TLS record");
            }
            got += n;
        }
        var length = BinaryPrimitives.ReadUInt16BigEndian(header[3..]);
        if (length > MaxRecordBody)
        {
            throw new IOException($"the server sent a TLS record of {length} bytes, more than TLS allows");
        }
        _transport.ReadExactly(_record.AsSpan(RecordHeader, length));
        fixed (byte* p = _record)
        {
            if (OpenSsl.BIO_write(_readBio, p, RecordHeader + length) != RecordHeader + length)
            {
                throw new IOException("cannot buffer a TLS record: " + OpenSsl.Errors("BIO_write failed"));
            }
        }
        if (_established)
        {
            _recordsReceived++;
        }
        return true;
    }

    /// <summary>Sends what OpenSSL has written, counting the records once the traffic keys are in use.</summary>
    public override void Flush()
    {
        var pending = (int)OpenSsl.BIO_ctrl(_writeBio, OpenSsl.BioCtrlPending, 0, 0);
        if (pending <= 0)
        {
            return;
        }
        var output = new byte[pending];
        fixed (byte* p = output)
        {
            if (OpenSsl.BIO_read(_writeBio, p, pending) != pending)
            {
                throw new IOException("cannot take TLS output: " + OpenSsl.Errors("BIO_read failed"));
            }
        }
        if (_established)
        {
            // OpenSSL puts whole records into a memory BIO, so the output is a run of records.
            for (var offset = 0; offset + RecordHeader <= output.Length; offset += RecordHeader + BinaryPrimitives.ReadUInt16BigEndian(output.AsSpan(offset + 3)))
            {
                _recordsSent++;
            }
        }
        _transport.Write(output);
    }

    public override int Read(Span<byte> buffer)
    {
        if (buffer.IsEmpty)
        {
            return 0;
        }
        while (true)
        {
            int result;
            fixed (byte* p = buffer)
            {
                result = OpenSsl.SSL_read(_ssl, p, buffer.Length);
            }
            if (result > 0)
            {
                _receivedData = true;
                return result;
            }
            var error = OpenSsl.SSL_get_error(_ssl, result);
            if (error == OpenSsl.SslErrorZeroReturn)
            {
                return 0;
            }
            if (error != OpenSsl.SslErrorWantRead)
            {
                var reason = OpenSsl.Errors("the connection failed");
                throw new IOException(_receivedData ? "TLS: " + reason : $"the server refused this client after the TLS handshake ({reason}): is this machine's certificate one the server accepts?");
            }
            Flush();
            if (!ReceiveRecord())
            {
                if (!_receivedData)
                {
                    // TLS 1.3 lets the server judge the client's certificate after the client has finished; a refusal
                    // then shows as the connection's end.
                    throw new IOException("the server refused this client after the TLS handshake (it closed the connection): is this machine's certificate (client-cert.pem) one the server accepts?");
                }
                return 0;
            }
        }
    }

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            int result;
            fixed (byte* p = buffer)
            {
                result = OpenSsl.SSL_write(_ssl, p, buffer.Length);
            }
            if (result <= 0)
            {
                throw new IOException("TLS: " + OpenSsl.Errors($"write failed ({OpenSsl.SSL_get_error(_ssl, result)})"));
            }
            buffer = buffer[result..];
        }
        Flush();
    }

    /// <summary>
    /// The keys and next sequence numbers of both directions, for the kernel; only when nothing of the server's is
    /// left unread and nothing after the handshake changed the keys.
    /// </summary>
    public (TrafficKeys Transmit, TrafficKeys Receive) TakeKeys()
    {
        if (_postHandshakeMessage is { } message)
        {
            throw new IOException($"the server sent {message} after the TLS handshake: kernel TLS cannot carry the connection");
        }
        if (OpenSsl.SSL_pending(_ssl) > 0 || (int)OpenSsl.BIO_ctrl(_readBio, OpenSsl.BioCtrlPending, 0, 0) > 0)
        {
            throw new IOException("the server sent more than NBD's answer before the hand-over to kernel TLS");
        }
        var suite = OpenSsl.SSL_CIPHER_get_protocol_id(OpenSsl.SSL_get_current_cipher(_ssl));
        var (digest, keyLength) = suite switch
        {
            Aes128GcmSha256 => (OpenSsl.EVP_sha256(), 16),
            Aes256GcmSha384 => (OpenSsl.EVP_sha384(), 32),
            ChaCha20Poly1305Sha256 => (OpenSsl.EVP_sha256(), 32),
            _ => throw new IOException($"the server chose cipher suite 0x{suite:x4}, which kernel TLS cannot take"),
        };
        return (new TrafficKeys(suite, ExpandLabel(digest, _clientSecret!, "key", keyLength), ExpandLabel(digest, _clientSecret!, "iv", 12), _recordsSent),
                new TrafficKeys(suite, ExpandLabel(digest, _serverSecret!, "key", keyLength), ExpandLabel(digest, _serverSecret!, "iv", 12), _recordsReceived));
    }

    /// <summary>The cipher suite in use (its IANA number).</summary>
    public ushort CipherSuite => OpenSsl.SSL_CIPHER_get_protocol_id(OpenSsl.SSL_get_current_cipher(_ssl));

    /// <summary>
    /// HKDF-Expand-Label(secret, label, "", length) of RFC 8446 section 7.1; every length needed here fits in one
    /// HMAC block, so the expansion is T(1) = HMAC(secret, HkdfLabel || 0x01).
    /// </summary>
    internal static byte[] ExpandLabel(nint digest, byte[] secret, string label, int length)
    {
        var fullLabel = "tls13 " + label;
        var info = new byte[2 + 1 + fullLabel.Length + 1 + 1];
        BinaryPrimitives.WriteUInt16BigEndian(info, (ushort)length);
        info[2] = (byte)fullLabel.Length;
        System.Text.Encoding.ASCII.GetBytes(fullLabel, info.AsSpan(3));
        info[^2] = 0;
        info[^1] = 1;
        var block = stackalloc byte[64];
        uint produced = 0;
        fixed (byte* key = secret)
        fixed (byte* data = info)
        {
            if (OpenSsl.HMAC(digest, key, secret.Length, data, (nuint)info.Length, block, &produced) == null || produced < length)
            {
                throw new IOException("cannot derive the TLS traffic keys: " + OpenSsl.Errors("HMAC failed"));
            }
        }
        var result = new Span<byte>(block, length).ToArray();
        CryptographicOperations.ZeroMemory(new Span<byte>(block, 64));
        return result;
    }

    protected override void Dispose(bool disposing)
    {
        lock (s_sessionsLock)
        {
            if (!s_sessions.Remove(_ssl))
            {
                // Freed already.
                base.Dispose(disposing);
                return;
            }
        }
        if (_clientSecret is not null)
        {
            CryptographicOperations.ZeroMemory(_clientSecret);
        }
        if (_serverSecret is not null)
        {
            CryptographicOperations.ZeroMemory(_serverSecret);
        }
        OpenSsl.SSL_free(_ssl);
        _ownedContext?.Dispose();
        base.Dispose(disposing);
    }
}
