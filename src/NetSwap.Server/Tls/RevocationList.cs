using System.Formats.Asn1;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace NetSwap.Server.Tls;

/// <summary>
/// A certificate revocation list (ca-crl.pem) of the site's CA: the serial numbers it revokes. The list's signature is
/// checked against the CA's key, so only the CA can revoke; a list from anyone else is refused at load.
/// </summary>
internal sealed class RevocationList
{
    private readonly HashSet<string> _revokedSerials;
    private readonly byte[] _issuer;

    private RevocationList(byte[] issuer, HashSet<string> revokedSerials)
    {
        _issuer = issuer;
        _revokedSerials = revokedSerials;
    }

    public int Count => _revokedSerials.Count;

    public bool IsRevoked(X509Certificate certificate)
    {
        using var parsed = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        return parsed.IssuerName.RawData.AsSpan().SequenceEqual(_issuer)
            && _revokedSerials.Contains(Convert.ToHexString(parsed.SerialNumberBytes.Span));
    }

    public static RevocationList Load(string path, X509Certificate2Collection authorities)
    {
        try
        {
            var bytes = Hosting.SettingFile.ReadAllBytes(path, "certificate revocation list", 16 << 20);
            var text = System.Text.Encoding.ASCII.GetString(bytes);
            var der = PemEncoding.TryFind(text, out var fields)
                ? Convert.FromBase64String(text[fields.Base64Data])
                : bytes;
            return Parse(der, authorities);
        }
        catch (Exception e) when (e is AsnContentException or FormatException or CryptographicException)
        {
            throw new IOException($"cannot read the certificate revocation list {path}: {e.Message}", e);
        }
    }

    /// <summary>
    /// CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue BIT STRING };
    /// TBSCertList ::= SEQUENCE { version OPTIONAL, signature, issuer, thisUpdate, nextUpdate OPTIONAL,
    /// revokedCertificates SEQUENCE OF SEQUENCE { userCertificate INTEGER, revocationDate, extensions OPTIONAL } OPTIONAL, [0] extensions OPTIONAL }.
    /// </summary>
    public static RevocationList Parse(byte[] der, X509Certificate2Collection authorities)
    {
        var outer = new AsnReader(der, AsnEncodingRules.DER).ReadSequence();
        var tbsBytes = outer.PeekEncodedValue().ToArray();
        var tbs = outer.ReadSequence();
        var algorithm = outer.ReadSequence().ReadObjectIdentifier();
        var signature = outer.ReadBitString(out _);

        if (tbs.PeekTag().HasSameClassAndValue(Asn1Tag.Integer))
        {
            tbs.ReadInteger();
        }
        tbs.ReadSequence();
        var issuer = tbs.ReadEncodedValue().ToArray();
        tbs.ReadEncodedValue();
        if (tbs.HasData && (tbs.PeekTag().HasSameClassAndValue(Asn1Tag.UtcTime) || tbs.PeekTag().HasSameClassAndValue(Asn1Tag.GeneralizedTime)))
        {
            tbs.ReadEncodedValue();
        }
        var revoked = new HashSet<string>(StringComparer.Ordinal);
        if (tbs.HasData && tbs.PeekTag().HasSameClassAndValue(Asn1Tag.Sequence))
        {
            var entries = tbs.ReadSequence();
            while (entries.HasData)
            {
                var entry = entries.ReadSequence();
                revoked.Add(Convert.ToHexString(entry.ReadIntegerBytes().Span));
            }
        }

        var authority = authorities.FirstOrDefault(a => a.SubjectName.RawData.AsSpan().SequenceEqual(issuer))
            ?? throw new CryptographicException("it is not issued by the configured CA");
        var verified = algorithm switch
        {
            "1.2.840.10045.4.3.2" => authority.GetECDsaPublicKey()?.VerifyData(tbsBytes, signature, HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence),
            "1.2.840.10045.4.3.3" => authority.GetECDsaPublicKey()?.VerifyData(tbsBytes, signature, HashAlgorithmName.SHA384, DSASignatureFormat.Rfc3279DerSequence),
            "1.2.840.113549.1.1.11" => authority.GetRSAPublicKey()?.VerifyData(tbsBytes, signature, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1),
            "1.2.840.113549.1.1.12" => authority.GetRSAPublicKey()?.VerifyData(tbsBytes, signature, HashAlgorithmName.SHA384, RSASignaturePadding.Pkcs1),
            _ => throw new CryptographicException($"signature algorithm {algorithm} is not supported"),
        };
        if (verified != true)
        {
            throw new CryptographicException("its signature does not verify with the CA's key");
        }
        return new RevocationList(issuer, revoked);
    }
}
