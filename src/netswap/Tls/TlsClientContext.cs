namespace NetSwap.Client.Tls;

/// <summary>
/// What every TLS session of this client shares: TLS 1.3 only, the cipher suites, the site CA, this machine's key pair,
/// and the callbacks that take the traffic secrets out. Made once and kept by the reconnect keeper, so that a reconnect
/// reads no file: while the swap device is dead, a page of a credential file that was swapped out (a tmpfs root) could
/// only come back through that device, and the keeper would wait for itself.
/// </summary>
internal sealed class TlsClientContext : IDisposable
{
    private nint _handle;

    private TlsClientContext(nint handle, TlsCredentials credentials)
    {
        _handle = handle;
        Credentials = credentials;
    }

    public TlsCredentials Credentials { get; }

    public nint Handle => _handle != 0 ? _handle : throw new ObjectDisposedException(nameof(TlsClientContext));

    /// <summary>Reads and checks the credentials: a CA that does not load or a key that does not match fails here.</summary>
    public static TlsClientContext Create(TlsCredentials credentials, string? cipherSuites = null)
    {
        OpenSsl.ERR_clear_error();
        var context = OpenSsl.SSL_CTX_new(OpenSsl.TLS_client_method());
        if (context == 0)
        {
            throw new IOException("cannot set up TLS: " + OpenSsl.Errors("SSL_CTX_new failed"));
        }
        try
        {
            // TLS 1.3 only: its keys are what the kernel takes over, and the kernel's NBD driver must never meet a
            // renegotiation.
            OpenSsl.SSL_CTX_ctrl(context, OpenSsl.SslCtrlSetMinProtoVersion, OpenSsl.Tls13Version, 0);
            OpenSsl.SSL_CTX_ctrl(context, OpenSsl.SslCtrlSetMaxProtoVersion, OpenSsl.Tls13Version, 0);
            TlsClient.Require(OpenSsl.SSL_CTX_set_ciphersuites(context, cipherSuites ?? TlsClient.CipherSuites(TlsClient.CpuHasAes())), "the cipher suites");
            TlsClient.Require(OpenSsl.SSL_CTX_load_verify_locations(context, credentials.CaFile, null), $"the CA certificate {credentials.CaFile}");
            OpenSsl.SSL_CTX_set_verify(context, OpenSsl.SslVerifyPeer, 0);
            if (credentials.CertificateFile is { } certificate && credentials.KeyFile is { } key)
            {
                TlsClient.Require(OpenSsl.SSL_CTX_use_certificate_chain_file(context, certificate), $"the client certificate {certificate}");
                TlsClient.Require(OpenSsl.SSL_CTX_use_PrivateKey_file(context, key, OpenSsl.SslFiletypePem), $"the client key {key}");
                TlsClient.Require(OpenSsl.SSL_CTX_check_private_key(context), $"the client key {key} (it does not match {certificate})");
            }
            TlsClient.SetCallbacks(context);
            return new TlsClientContext(context, credentials);
        }
        catch
        {
            OpenSsl.SSL_CTX_free(context);
            throw;
        }
    }

    public void Dispose()
    {
        if (_handle != 0)
        {
            OpenSsl.SSL_CTX_free(_handle);
            _handle = 0;
        }
    }
}
