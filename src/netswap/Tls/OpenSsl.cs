using System.Runtime.InteropServices;

namespace NetSwap.Client.Tls;

/// <summary>
/// The parts of the system's OpenSSL 3 that the kernel-TLS hand-over needs. .NET's SslStream cannot give up the
/// traffic secrets or say how many records it has sent and received; OpenSSL driven through memory BIOs can, and it is
/// the TLS stack every Debian system already trusts. The static client links libssl.a and libcrypto.a in (netswap.csproj),
/// so the initramfs needs no extra library; a JIT build (the tests) loads libssl.so.3.
/// </summary>
internal static unsafe partial class OpenSsl
{
    private const string Ssl = "libssl";
    private const string Crypto = "libcrypto";

    public const int SslErrorWantRead = 2;
    public const int SslErrorZeroReturn = 6;
    public const int SslVerifyPeer = 1;
    public const int SslFiletypePem = 1;
    public const int SslCtrlSetMinProtoVersion = 123;
    public const int SslCtrlSetMaxProtoVersion = 124;
    public const int Tls13Version = 0x0304;
    public const int BioCtrlPending = 10;
    public const int ContentTypeHandshake = 22;

    [LibraryImport(Ssl)]
    public static partial nint TLS_client_method();

    [LibraryImport(Ssl)]
    public static partial nint SSL_CTX_new(nint method);

    [LibraryImport(Ssl)]
    public static partial void SSL_CTX_free(nint context);

    [LibraryImport(Ssl)]
    public static partial nint SSL_CTX_ctrl(nint context, int command, nint larg, nint parg);

    [LibraryImport(Ssl, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int SSL_CTX_set_ciphersuites(nint context, string suites);

    [LibraryImport(Ssl, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int SSL_CTX_load_verify_locations(nint context, string? file, string? directory);

    [LibraryImport(Ssl)]
    public static partial void SSL_CTX_set_verify(nint context, int mode, nint callback);

    [LibraryImport(Ssl, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int SSL_CTX_use_certificate_chain_file(nint context, string file);

    [LibraryImport(Ssl, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int SSL_CTX_use_PrivateKey_file(nint context, string file, int type);

    [LibraryImport(Ssl)]
    public static partial int SSL_CTX_check_private_key(nint context);

    [LibraryImport(Ssl)]
    public static partial void SSL_CTX_set_keylog_callback(nint context, delegate* unmanaged<nint, byte*, void> callback);

    [LibraryImport(Ssl)]
    public static partial void SSL_CTX_set_msg_callback(nint context, delegate* unmanaged<int, int, int, byte*, nuint, nint, nint, void> callback);

    [LibraryImport(Ssl)]
    public static partial nint SSL_new(nint context);

    [LibraryImport(Ssl)]
    public static partial void SSL_free(nint ssl);

    [LibraryImport(Ssl)]
    public static partial void SSL_set_bio(nint ssl, nint readBio, nint writeBio);

    [LibraryImport(Ssl)]
    public static partial nint SSL_get_rbio(nint ssl);

    [LibraryImport(Ssl)]
    public static partial nint SSL_get_wbio(nint ssl);

    [LibraryImport(Ssl)]
    public static partial void SSL_set_connect_state(nint ssl);

    [LibraryImport(Ssl)]
    public static partial int SSL_do_handshake(nint ssl);

    [LibraryImport(Ssl)]
    public static partial int SSL_read(nint ssl, byte* buffer, int count);

    [LibraryImport(Ssl)]
    public static partial int SSL_write(nint ssl, byte* buffer, int count);

    [LibraryImport(Ssl)]
    public static partial int SSL_get_error(nint ssl, int result);

    [LibraryImport(Ssl)]
    public static partial int SSL_pending(nint ssl);

    [LibraryImport(Ssl)]
    public static partial int SSL_version(nint ssl);

    [LibraryImport(Ssl)]
    public static partial nint SSL_get_current_cipher(nint ssl);

    [LibraryImport(Ssl)]
    public static partial ushort SSL_CIPHER_get_protocol_id(nint cipher);

    [LibraryImport(Ssl)]
    public static partial nint SSL_get_verify_result(nint ssl);

    [LibraryImport(Crypto)]
    public static partial nint BIO_s_mem();

    [LibraryImport(Crypto)]
    public static partial nint BIO_new(nint method);

    [LibraryImport(Crypto)]
    public static partial int BIO_free(nint bio);

    [LibraryImport(Crypto)]
    public static partial int BIO_write(nint bio, byte* data, int length);

    [LibraryImport(Crypto)]
    public static partial int BIO_read(nint bio, byte* data, int length);

    [LibraryImport(Crypto)]
    public static partial nint BIO_ctrl(nint bio, int command, nint larg, nint parg);

    [LibraryImport(Crypto)]
    public static partial nuint ERR_get_error();

    [LibraryImport(Crypto)]
    public static partial void ERR_clear_error();

    [LibraryImport(Crypto)]
    public static partial void ERR_error_string_n(nuint error, byte* buffer, nuint length);

    [LibraryImport(Crypto)]
    public static partial nint X509_verify_cert_error_string(nint error);

    [LibraryImport(Crypto)]
    public static partial nint EVP_sha256();

    [LibraryImport(Crypto)]
    public static partial nint EVP_sha384();

    [LibraryImport(Crypto)]
    public static partial byte* HMAC(nint digest, byte* key, int keyLength, byte* data, nuint dataLength, byte* result, uint* resultLength);

    /// <summary>OpenSSL's queued errors as one line (and the queue emptied); <paramref name="fallback"/> when there are none.</summary>
    public static string Errors(string fallback)
    {
        var messages = new List<string>();
        var buffer = stackalloc byte[256];
        for (var error = ERR_get_error(); error != 0; error = ERR_get_error())
        {
            ERR_error_string_n(error, buffer, 256);
            var text = Marshal.PtrToStringUTF8((nint)buffer) ?? "";
            // "error:0A000086:SSL routines::certificate verify failed": the reason is the last field.
            messages.Add(text[(text.LastIndexOf(':') + 1)..]);
        }
        return messages.Count == 0 ? fallback : string.Join("; ", messages.Distinct());
    }

    public static string VerifyError(nint code) => Marshal.PtrToStringUTF8(X509_verify_cert_error_string(code)) ?? $"verify error {code}";
}
