using System.Buffers.Binary;
using System.Security.Cryptography;
using NetSwap.Client.Kernel;

namespace NetSwap.Client.Tls;

/// <summary>
/// Linux kernel TLS (Documentation/networking/tls.rst): the "tls" upper-layer protocol on a TCP socket, then the
/// transmit and receive keys through SOL_TLS. From then on the socket encrypts and decrypts in the kernel, so the
/// kernel's NBD driver (sock_sendmsg/sock_recvmsg) carries TLS with no process in the data path.
/// </summary>
internal static unsafe class KernelTls
{
    private const int TcpUlp = 31;
    private const int SolTls = 282;
    private const int TlsTx = 1;
    private const int TlsRx = 2;
    private const ushort Tls13 = 0x0304;
    private const ushort CipherAesGcm128 = 51;
    private const ushort CipherAesGcm256 = 52;
    private const ushort CipherChaCha20Poly1305 = 54;

    /// <summary>The kernel's list of registered upper-layer protocols ("tls" once the module is loaded).</summary>
    public const string AvailableUlp = "/proc/sys/net/ipv4/tcp_available_ulp";

    /// <summary>Null when this kernel can do TLS on a socket; otherwise why not, for the one line the user reads.</summary>
    public static string? Missing(string availableUlp = AvailableUlp)
    {
        try
        {
            return File.ReadAllText(availableUlp).Split(' ', '\n', '\t').Contains("tls")
                ? null
                : "this kernel has no kernel TLS (the 'tls' module is not loaded or not built: modprobe tls)";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"cannot tell whether this kernel has kernel TLS ({availableUlp}: {e.Message})";
        }
    }

    /// <summary>
    /// struct tls12_crypto_info_* of linux/tls.h for one direction (TLS 1.3 uses the same structures): the 12-byte
    /// IV is split into the salt (its first 4 bytes) and the explicit IV for AES-GCM, whole for ChaCha20-Poly1305.
    /// </summary>
    internal static byte[] CryptoInfo(TrafficKeys keys)
    {
        var (cipher, ivLength, saltLength) = keys.CipherSuite switch
        {
            TlsClient.Aes128GcmSha256 => (CipherAesGcm128, 8, 4),
            TlsClient.Aes256GcmSha384 => (CipherAesGcm256, 8, 4),
            TlsClient.ChaCha20Poly1305Sha256 => (CipherChaCha20Poly1305, 12, 0),
            _ => throw new IOException($"kernel TLS does not take cipher suite 0x{keys.CipherSuite:x4}"),
        };
        if (keys.Iv.Length != 12 || keys.Key.Length != (cipher == CipherAesGcm128 ? 16 : 32))
        {
            throw new IOException("the TLS traffic keys have the wrong size for the cipher suite");
        }
        var info = new byte[4 + ivLength + keys.Key.Length + saltLength + 8];
        BinaryPrimitives.WriteUInt16LittleEndian(info, Tls13);
        BinaryPrimitives.WriteUInt16LittleEndian(info.AsSpan(2), cipher);
        var offset = 4;
        keys.Iv.AsSpan(saltLength, ivLength).CopyTo(info.AsSpan(offset));
        offset += ivLength;
        keys.Key.CopyTo(info.AsSpan(offset));
        offset += keys.Key.Length;
        keys.Iv.AsSpan(0, saltLength).CopyTo(info.AsSpan(offset));
        offset += saltLength;
        BinaryPrimitives.WriteUInt64BigEndian(info.AsSpan(offset), keys.Sequence);
        return info;
    }

    /// <summary>Turns the connected socket into a kernel TLS socket with both directions' keys.</summary>
    public static void Install(int socket, TrafficKeys transmit, TrafficKeys receive)
    {
        var ulp = "tls"u8;
        fixed (byte* name = ulp)
        {
            if (Libc.SetSockOpt(socket, Libc.IPPROTO_TCP, TcpUlp, name, ulp.Length) != 0)
            {
                throw new IOException($"cannot switch the connection to kernel TLS: {Libc.Describe(Libc.LastError)} (is the tls module loaded?)");
            }
        }
        SetKeys(socket, TlsTx, transmit, "transmit");
        SetKeys(socket, TlsRx, receive, "receive");
    }

    private static void SetKeys(int socket, int direction, TrafficKeys keys, string what)
    {
        var info = CryptoInfo(keys);
        try
        {
            fixed (byte* p = info)
            {
                if (Libc.SetSockOpt(socket, SolTls, direction, p, info.Length) != 0)
                {
                    throw new IOException($"the kernel refused the TLS {what} keys: {Libc.Describe(Libc.LastError)}");
                }
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(info);
        }
    }
}
