using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace NetSwap.Server.Tls;

internal enum TlsMode
{
    /// <summary>NOTLS: NBD_OPT_STARTTLS is refused with NBD_REP_ERR_POLICY.</summary>
    Off,
    /// <summary>SELECTIVETLS: clients may upgrade; exports marked TLS-only need it.</summary>
    On,
    /// <summary>FORCEDTLS: every option but STARTTLS and ABORT is answered NBD_REP_ERR_TLS_REQD before TLS.</summary>
    Require,
}

/// <summary>
/// Credentials and client-authentication rules, loaded from PEM files: an immutable snapshot, replaced whole on SIGHUP.
/// Client keys are accepted by chain (to the configured CA) or by SHA-256 fingerprint (for sites without a CA).
/// </summary>
internal sealed class TlsConfiguration
{
    public TlsConfiguration(TlsMode mode, X509Certificate2? serverCertificate, X509Certificate2Collection caCertificates,
        bool verifyClient, IReadOnlySet<string>? allowedFingerprints, string? fingerprintFile, IReadOnlySet<string> tlsOnlyExports,
        RevocationList? revocations = null)
    {
        Revocations = revocations;
        Mode = mode;
        ServerCertificate = serverCertificate;
        CaCertificates = caCertificates;
        VerifyClient = verifyClient;
        AllowedFingerprints = allowedFingerprints;
        FingerprintFile = fingerprintFile;
        TlsOnlyExports = tlsOnlyExports;
    }

    public static TlsConfiguration Disabled { get; } = new(TlsMode.Off, null, [], false, null, null, new HashSet<string>());

    public TlsMode Mode { get; }
    public X509Certificate2? ServerCertificate { get; }
    public X509Certificate2Collection CaCertificates { get; }
    public bool VerifyClient { get; }
    public IReadOnlySet<string>? AllowedFingerprints { get; }
    public string? FingerprintFile { get; }
    /// <summary>Exports (by policy name: "swap" for every swap area) that are served only over TLS.</summary>
    public IReadOnlySet<string> TlsOnlyExports { get; }
    /// <summary>Client certificates the CA has revoked (ca-crl.pem), or null.</summary>
    public RevocationList? Revocations { get; }

    /// <summary>Whether the server asks the client for a certificate during the TLS handshake.</summary>
    public bool WantsClientCertificate => VerifyClient || AllowedFingerprints is not null;

    public static string Fingerprint(X509Certificate certificate) => Convert.ToHexString(SHA256.HashData(certificate.GetRawCertData()));

    /// <summary>
    /// Loads credentials. <paramref name="certificatesDirectory"/> uses nbdkit's layout (ca-cert.pem, server-cert.pem,
    /// server-key.pem); explicit files win over it. Errors name the file.
    /// </summary>
    public static TlsConfiguration Load(TlsMode mode, string? certificatesDirectory, string? certFile, string? keyFile, string? caFile,
        bool verifyClient, string? fingerprintFile, IReadOnlySet<string> tlsOnlyExports, string? crlFile = null)
    {
        if (mode == TlsMode.Off)
        {
            return new TlsConfiguration(TlsMode.Off, null, [], false, null, null, tlsOnlyExports);
        }
        certFile ??= certificatesDirectory is null ? null : Path.Combine(certificatesDirectory, "server-cert.pem");
        keyFile ??= certificatesDirectory is null ? null : Path.Combine(certificatesDirectory, "server-key.pem");
        if (caFile is null && certificatesDirectory is not null && File.Exists(Path.Combine(certificatesDirectory, "ca-cert.pem")))
        {
            caFile = Path.Combine(certificatesDirectory, "ca-cert.pem");
        }
        if (certFile is null || keyFile is null)
        {
            throw new IOException("TLS needs a server certificate and key: --tls-cert and --tls-key, or --tls-certificates DIR");
        }
        X509Certificate2 server;
        try
        {
            using var pem = X509Certificate2.CreateFromPem(
                Hosting.SettingFile.ReadAllText(certFile, "TLS certificate"), Hosting.SettingFile.ReadAllText(keyFile, "TLS key"));
            // Re-imported so the private key is usable by SslStream on Linux.
            server = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
        }
        catch (Exception e) when (e is CryptographicException or IOException or ArgumentException)
        {
            throw new IOException($"cannot load the TLS server certificate {certFile} with key {keyFile}: {e.Message}", e);
        }
        var cas = new X509Certificate2Collection();
        if (caFile is not null)
        {
            try
            {
                cas.ImportFromPem(Hosting.SettingFile.ReadAllText(caFile, "TLS CA certificate"));
            }
            catch (Exception e) when (e is CryptographicException or IOException)
            {
                throw new IOException($"cannot load the TLS CA certificate {caFile}: {e.Message}", e);
            }
        }
        if (crlFile is null && certificatesDirectory is not null && File.Exists(Path.Combine(certificatesDirectory, "ca-crl.pem")))
        {
            crlFile = Path.Combine(certificatesDirectory, "ca-crl.pem");
        }
        if (crlFile is not null && cas.Count == 0)
        {
            throw new IOException($"the revocation list {crlFile} needs the CA certificate that signed it (--tls-ca)");
        }
        var revocations = crlFile is null ? null : RevocationList.Load(crlFile, cas);
        if (verifyClient && cas.Count == 0)
        {
            throw new IOException("--tls-verify-client needs a CA: --tls-ca FILE, or ca-cert.pem in --tls-certificates DIR");
        }
        return new TlsConfiguration(mode, server, cas, verifyClient,
            fingerprintFile is null ? null : LoadFingerprints(fingerprintFile), fingerprintFile, tlsOnlyExports, revocations);
    }

    /// <summary>One SHA-256 fingerprint per line (hex, colons allowed, as `openssl x509 -fingerprint -sha256` prints), '#' comments.</summary>
    public static HashSet<string> LoadFingerprints(string path)
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (number, entry) in Access.ListFile.Entries(File.ReadAllText(path)))
        {
            var line = entry;
            if (line.StartsWith("sha256 Fingerprint=", StringComparison.OrdinalIgnoreCase))
            {
                line = line["sha256 Fingerprint=".Length..];
            }
            var hex = line.Replace(":", "", StringComparison.Ordinal).ToUpperInvariant();
            if (hex.Length != 64 || !hex.All(Uri.IsHexDigit))
            {
                throw new FormatException($"{path}:{number}: '{line}' is not a SHA-256 fingerprint (64 hex digits)");
            }
            set.Add(hex);
        }
        return set;
    }

    /// <summary>Decides on a client certificate; the reason comes back for the log (null: accepted).</summary>
    public string? CheckClientCertificate(X509Certificate? certificate, out string? subject, out string? fingerprint)
    {
        subject = certificate?.Subject;
        fingerprint = certificate is null ? null : Fingerprint(certificate);
        if (!WantsClientCertificate)
        {
            return null;
        }
        if (certificate is null)
        {
            return "no client certificate";
        }
        if (Revocations is not null && Revocations.IsRevoked(certificate))
        {
            return "client certificate is revoked (ca-crl.pem)";
        }
        if (AllowedFingerprints is not null && AllowedFingerprints.Contains(fingerprint!))
        {
            return null;
        }
        if (VerifyClient)
        {
            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.AddRange(CaCertificates);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            chain.ChainPolicy.ApplicationPolicy.Add(new Oid("1.3.6.1.5.5.7.3.2"));
            using var candidate = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
            if (chain.Build(candidate))
            {
                return null;
            }
            var status = string.Join(", ", chain.ChainStatus.Select(s => s.Status.ToString()));
            return AllowedFingerprints is null
                ? $"client certificate does not chain to the CA ({status})"
                : $"client certificate neither chains to the CA ({status}) nor is listed in {FingerprintFile}";
        }
        return $"client certificate fingerprint is not listed in {FingerprintFile}";
    }
}
