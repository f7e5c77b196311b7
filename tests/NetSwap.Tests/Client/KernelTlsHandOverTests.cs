using System.Buffers.Binary;
using System.Net;
using System.Security.Cryptography;
using NetSwap.Client;
using NetSwap.Client.Attach;
using NetSwap.Client.Kernel;
using NetSwap.Client.Tls;
using NetSwap.Protocol.Nbd;
using NetSwap.Server.Tls;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Client;

/// <summary>
/// attach --tls against a real netswapd, up to the moment the kernel takes the socket. This host's kernel has no
/// kernel TLS, so the test does what the kernel would do with the keys and record numbers the client hands over:
/// seal NBD requests into TLS 1.3 records and open the server's answers. If the secrets, the key derivation or the
/// counting of records were wrong by one, the server (or this test) would fail to decrypt. Every record after GO's
/// answer must be application data: the kernel's NBD driver cannot take any other (the VM test `ktls` runs the real
/// kernel).
/// </summary>
public sealed class KernelTlsHandOverTests
{
    private const int MiB = 1 << 20;

    private static async Task<ServerHarness> StartAsync(TlsConfiguration tls)
    {
        var server = await ServerHarness.StartAsync(("disk", MiB, false));
        server.Context.Tls = tls;
        return server;
    }

    private static IPEndPoint Endpoint(ServerHarness server) => new(IPAddress.Loopback, server.Port);

    [Theory]
    [InlineData("TLS_AES_128_GCM_SHA256", TlsClient.Aes128GcmSha256)]
    [InlineData("TLS_AES_256_GCM_SHA384", TlsClient.Aes256GcmSha384)]
    [InlineData("TLS_CHACHA20_POLY1305_SHA256", TlsClient.ChaCha20Poly1305Sha256)]
    public async Task AfterGo_TheKeysAndRecordNumbersHandedOver_AreTheOnesTheServerGoesOnWith(string suite, ushort id)
    {
        var certs = await TestCertificates.GetAsync();
        await using var server = await StartAsync(certs.Configuration(TlsMode.Require));
        using var socket = KernelSocket.Connect(Endpoint(server), TimeSpan.FromSeconds(10));
        var probe = await NbdProbe.OverAsync(socket, default);
        await probe.StartTlsAsync(default);
        using var tls = TlsClient.Handshake(socket, TlsCredentials.FromDirectory(certs.Client("pc01")), suite);
        var (size, _) = await NbdProbe.Resume(tls).GoAsync("disk", default);
        Assert.Equal((ulong)MiB, size);
        var (transmit, receive) = tls.TakeKeys();
        Assert.Equal(id, transmit.CipherSuite);
        // The client wrote its GO in one record; the server's tickets and its answer to GO came before the hand-over.
        Assert.Equal(1UL, transmit.Sequence);
        Assert.True(receive.Sequence >= 1, $"received {receive.Sequence} records");

        // From here on only what the kernel does with the socket: whole records sealed and opened with those keys.
        var kernel = new RecordLayer(socket, transmit, receive);
        var pattern = RandomNumberGenerator.GetBytes(4096);
        var write = new byte[NbdRequest.Size + pattern.Length];
        new NbdRequest(0, NbdCommand.Write, 7, 8192, (uint)pattern.Length).Write(write);
        pattern.CopyTo(write, NbdRequest.Size);
        kernel.Send(write);
        AssertReply(kernel.Receive(NbdSimpleReply.Size), 7);
        var read = new byte[NbdRequest.Size];
        new NbdRequest(0, NbdCommand.Read, 8, 8192, (uint)pattern.Length).Write(read);
        kernel.Send(read);
        var answer = kernel.Receive(NbdSimpleReply.Size + pattern.Length);
        AssertReply(answer, 8);
        Assert.Equal(pattern, answer[NbdSimpleReply.Size..]);
        Assert.Equal(pattern, File.ReadAllBytes(server.PathOf("disk")).AsSpan(8192, pattern.Length).ToArray());
        var disconnect = new byte[NbdRequest.Size];
        new NbdRequest(0, NbdCommand.Disc, 9, 0, 0).Write(disconnect);
        kernel.Send(disconnect);
        Assert.True(await server.Log.WaitForAsync("TLS established"));
    }

    private static void AssertReply(byte[] reply, ulong cookie)
    {
        Assert.True(NbdSimpleReply.TryRead(reply, out var parsed));
        Assert.Equal(cookie, parsed.Cookie);
        Assert.Equal(NbdError.None, parsed.Error);
    }

    [Fact]
    public async Task AServerTheSitesCaDoesNotVouchFor_IsRefusedAsUntrusted()
    {
        var certs = await TestCertificates.GetAsync();
        // A server with a certificate of its own CA: what a rogue host answering discovery would present.
        var rogue = TlsConfiguration.Load(TlsMode.Require, Path.Combine(certs.Root, "other", "server"), null, null, null, verifyClient: false, null, new HashSet<string>());
        await using var server = await StartAsync(rogue);
        using var context = TlsClientContext.Create(TlsCredentials.FromDirectory(certs.Client("pc01")));
        var e = await Assert.ThrowsAsync<TlsUntrustedServerException>(() =>
            KernelBoundConnection.OpenAsync(Endpoint(server), context, TimeSpan.FromSeconds(10), default));
        Assert.Contains("the server's certificate is not trusted", e.Message);
        Assert.Contains("ca-cert.pem", e.Message);
    }

    [Fact]
    public async Task AServerPresentingAClientsCertificate_IsRefused_SoAStolenClientKeyCannotPoseAsAServer()
    {
        var certs = await TestCertificates.GetAsync();
        // Signed by the site's CA, but for clients only (extendedKeyUsage clientAuth, as netswap-make-certs writes it).
        var impostor = TlsConfiguration.Load(TlsMode.Require, null, Path.Combine(certs.Client("pc02"), "client-cert.pem"),
            Path.Combine(certs.Client("pc02"), "client-key.pem"), Path.Combine(certs.Client("pc02"), "ca-cert.pem"), verifyClient: false, null, new HashSet<string>());
        await using var server = await StartAsync(impostor);
        using var context = TlsClientContext.Create(TlsCredentials.FromDirectory(certs.Client("pc01")));
        var e = await Assert.ThrowsAsync<TlsUntrustedServerException>(() =>
            KernelBoundConnection.OpenAsync(Endpoint(server), context, TimeSpan.FromSeconds(10), default));
        Assert.Contains("unsuitable certificate purpose", e.Message);
    }

    [Fact]
    public async Task AClientWithoutACertificate_IsRefusedByVerifyClient_WithAClearError()
    {
        var certs = await TestCertificates.GetAsync();
        await using var server = await StartAsync(certs.Configuration(TlsMode.Require));
        using var context = TlsClientContext.Create(TlsCredentials.FromDirectory(certs.Anonymous));
        using var connection = await KernelBoundConnection.OpenAsync(Endpoint(server), context, TimeSpan.FromSeconds(10), default);
        // TLS 1.3: the server judges the client's (missing) certificate after the client's side of the handshake is done.
        var e = await Assert.ThrowsAnyAsync<IOException>(() => connection.Probe.GoAsync("disk", default));
        Assert.Contains("refused this client", e.Message);
        Assert.True(await server.Log.WaitForAsync("no client certificate"));
    }

    [Fact]
    public async Task AContext_HandshakesAgainAndAgain_WithoutItsFiles_AsTheKeeperReconnectsWhileSwapIsDead()
    {
        // In a guest with a RAM-backed root the credential files' pages can be swapped out to the very device whose
        // connection the keeper is replacing; a reconnect that read them would wait for itself (seen in a VM run: the
        // keeper blocked in read() of a swapped-out tmpfs page until the kernel gave up). The context reads them once.
        var certs = await TestCertificates.GetAsync();
        await using var server = await StartAsync(certs.Configuration(TlsMode.Require));
        var copy = Scratch.Directory("netswap-creds-");
        foreach (var file in Directory.GetFiles(certs.Client("pc01")))
        {
            File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
        }
        using var context = TlsClientContext.Create(TlsCredentials.FromDirectory(copy));
        Directory.Delete(copy, recursive: true);
        for (var attempt = 0; attempt < 3; attempt++)
        {
            using var connection = await KernelBoundConnection.OpenAsync(Endpoint(server), context, TimeSpan.FromSeconds(10), default);
            var (size, _) = await connection.Probe.GoAsync("disk", default);
            Assert.Equal((ulong)MiB, size);
            connection.RehearseKeys();
        }
        Assert.Equal(3, server.Log.Lines.Count(l => l.Contains("TLS established", StringComparison.Ordinal)));
    }

    [Fact]
    public void AContext_RefusesCredentialsThatDoNotLoad_BeforeAnyConnection()
    {
        var directory = Scratch.Directory("netswap-badcreds-");
        File.WriteAllText(Path.Combine(directory, "ca-cert.pem"), "not a certificate\n");
        var e = Assert.Throws<IOException>(() => TlsClientContext.Create(TlsCredentials.FromDirectory(directory)));
        Assert.Contains("cannot use the CA certificate", e.Message);
        Assert.Contains("ca-cert.pem", e.Message);
    }

    [Fact]
    public void TheKernelsKeyStructure_SplitsTheIvIntoSaltAndExplicitPart_ForAesGcm_AndNotForChaCha()
    {
        var iv = Enumerable.Range(1, 12).Select(i => (byte)i).ToArray();
        var key = Enumerable.Repeat((byte)0xaa, 16).ToArray();
        var gcm = KernelTls.CryptoInfo(new TrafficKeys(TlsClient.Aes128GcmSha256, key, iv, 0x0102030405060708));
        // struct tls12_crypto_info_aes_gcm_128: version, cipher_type, iv[8], key[16], salt[4], rec_seq[8].
        Assert.Equal(40, gcm.Length);
        Assert.Equal(0x0304, BinaryPrimitives.ReadUInt16LittleEndian(gcm));
        Assert.Equal(51, BinaryPrimitives.ReadUInt16LittleEndian(gcm.AsSpan(2)));
        Assert.Equal(iv[4..], gcm[4..12]);
        Assert.Equal(key, gcm[12..28]);
        Assert.Equal(iv[..4], gcm[28..32]);
        Assert.Equal(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 }, gcm[32..40]);
        var chacha = KernelTls.CryptoInfo(new TrafficKeys(TlsClient.ChaCha20Poly1305Sha256, Enumerable.Repeat((byte)0xbb, 32).ToArray(), iv, 3));
        // struct tls12_crypto_info_chacha20_poly1305: version, cipher_type, iv[12], key[32], rec_seq[8].
        Assert.Equal(56, chacha.Length);
        Assert.Equal(54, BinaryPrimitives.ReadUInt16LittleEndian(chacha.AsSpan(2)));
        Assert.Equal(iv, chacha[4..16]);
        Assert.Equal(3UL, BinaryPrimitives.ReadUInt64BigEndian(chacha.AsSpan(48)));
        var gcm256 = KernelTls.CryptoInfo(new TrafficKeys(TlsClient.Aes256GcmSha384, Enumerable.Repeat((byte)0xcc, 32).ToArray(), iv, 0));
        Assert.Equal(56, gcm256.Length);
        Assert.Equal(52, BinaryPrimitives.ReadUInt16LittleEndian(gcm256.AsSpan(2)));
    }

    [Fact]
    public void KernelTls_IsMissing_WhenTheTlsUlpIsNotRegistered()
    {
        var file = Path.Combine(Scratch.Directory("netswap-ulp-"), "tcp_available_ulp");
        File.WriteAllText(file, "mptcp\n");
        Assert.Contains("no kernel TLS", KernelTls.Missing(file));
        File.WriteAllText(file, "mptcp tls\n");
        Assert.Null(KernelTls.Missing(file));
    }

    /// <summary>TLS 1.3's record protection (RFC 8446 section 5.2), as the kernel applies it on a kTLS socket.</summary>
    private sealed class RecordLayer(KernelSocket socket, TrafficKeys transmit, TrafficKeys receive)
    {
        private ulong _sent = transmit.Sequence;
        private ulong _received = receive.Sequence;
        private readonly List<byte> _plain = [];

        public void Send(byte[] data)
        {
            var inner = new byte[data.Length + 1];
            data.CopyTo(inner, 0);
            inner[^1] = 23;
            var record = new byte[5 + inner.Length + 16];
            record[0] = 23;
            record[1] = 3;
            record[2] = 3;
            BinaryPrimitives.WriteUInt16BigEndian(record.AsSpan(3), (ushort)(inner.Length + 16));
            Seal(transmit, _sent++, record.AsSpan(0, 5), inner, record.AsSpan(5, inner.Length), record.AsSpan(5 + inner.Length));
            socket.Write(record);
        }

        public byte[] Receive(int count)
        {
            while (_plain.Count < count)
            {
                var header = new byte[5];
                socket.ReadExactly(header);
                Assert.Equal(23, header[0]);
                var body = new byte[BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(3))];
                socket.ReadExactly(body);
                var inner = new byte[body.Length - 16];
                Open(receive, _received++, header, body.AsSpan(0, inner.Length), body.AsSpan(inner.Length), inner);
                var end = inner.Length - 1;
                while (inner[end] == 0)
                {
                    end--;
                }
                // Inner content type 23: application data. A ticket, a KeyUpdate or an alert here would end a kernel
                // TLS connection.
                Assert.Equal(23, inner[end]);
                _plain.AddRange(inner.AsSpan(0, end));
            }
            var result = _plain.GetRange(0, count).ToArray();
            _plain.RemoveRange(0, count);
            return result;
        }

        private static byte[] Nonce(TrafficKeys keys, ulong sequence)
        {
            var nonce = (byte[])keys.Iv.Clone();
            for (var i = 0; i < 8; i++)
            {
                nonce[4 + i] ^= (byte)(sequence >> (56 - 8 * i));
            }
            return nonce;
        }

        private static void Seal(TrafficKeys keys, ulong sequence, ReadOnlySpan<byte> header, ReadOnlySpan<byte> plain, Span<byte> cipher, Span<byte> tag)
        {
            if (keys.CipherSuite == TlsClient.ChaCha20Poly1305Sha256)
            {
                using var chacha = new ChaCha20Poly1305(keys.Key);
                chacha.Encrypt(Nonce(keys, sequence), plain, cipher, tag, header);
            }
            else
            {
                using var gcm = new AesGcm(keys.Key, 16);
                gcm.Encrypt(Nonce(keys, sequence), plain, cipher, tag, header);
            }
        }

        private static void Open(TrafficKeys keys, ulong sequence, ReadOnlySpan<byte> header, ReadOnlySpan<byte> cipher, ReadOnlySpan<byte> tag, Span<byte> plain)
        {
            if (keys.CipherSuite == TlsClient.ChaCha20Poly1305Sha256)
            {
                using var chacha = new ChaCha20Poly1305(keys.Key);
                chacha.Decrypt(Nonce(keys, sequence), cipher, tag, plain, header);
            }
            else
            {
                using var gcm = new AesGcm(keys.Key, 16);
                gcm.Decrypt(Nonce(keys, sequence), cipher, tag, plain, header);
            }
        }
    }
}
