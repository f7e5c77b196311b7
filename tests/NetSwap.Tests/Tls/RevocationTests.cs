using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using NetSwap.Server.Tls;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Tls;

/// <summary>ca-crl.pem: a client certificate the CA revoked is refused; a list not signed by the CA is not accepted.</summary>
public class RevocationTests
{
    private static X509Certificate2 WithKey(string cert, string key)
    {
        using var pem = X509Certificate2.CreateFromPemFile(cert, key);
        return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>A CRL from the given CA revoking the given client certificate, in PEM.</summary>
    private static string Crl(string caDirectory, string revokedClientCert)
    {
        using var ca = WithKey(Path.Combine(caDirectory, "ca-cert.pem"), Path.Combine(caDirectory, "ca-key.pem"));
        var builder = new CertificateRevocationListBuilder();
        builder.AddEntry(X509CertificateLoader.LoadCertificateFromFile(revokedClientCert), DateTimeOffset.UtcNow.AddMinutes(-1));
        var der = builder.Build(ca, BigInteger.One, DateTimeOffset.UtcNow.AddDays(1), HashAlgorithmName.SHA256);
        return PemEncoding.WriteString("X509 CRL", der);
    }

    [Fact]
    public async Task RevokedClient_IsRefused_OthersAreNot()
    {
        var certs = await TestCertificates.GetAsync();
        var dir = Scratch.Directory("netswap-crl-");
        foreach (var file in Directory.GetFiles(certs.ServerDirectory))
        {
            File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        }
        await File.WriteAllTextAsync(Path.Combine(dir, "ca-crl.pem"), Crl(Path.Combine(certs.Root, "site", "ca"), Path.Combine(certs.Client("pc01"), "client-cert.pem")));
        var tls = TlsConfiguration.Load(TlsMode.Require, dir, null, null, null, verifyClient: true, null, new HashSet<string>());
        Assert.Equal(1, tls.Revocations!.Count);
        await using var server = await ServerHarness.StartAsync(("disk", 1 << 20, false));
        server.Context.Tls = tls;
        var revoked = await ExternalTool.RunAsync("nbdinfo", [server.TlsUri("disk", certs.Client("pc01"))]);
        Assert.NotEqual(0, revoked.ExitCode);
        Assert.True(await server.Log.WaitForAsync("TLS refused: client certificate is revoked (ca-crl.pem)"));
        var fine = await ExternalTool.RunAsync("nbdinfo", [server.TlsUri("disk", certs.Client("pc02"))]);
        Assert.True(fine.ExitCode == 0, fine.All);
    }

    [Fact]
    public async Task ListSignedByAnotherCa_IsRefusedAtLoad()
    {
        var certs = await TestCertificates.GetAsync();
        var crl = Path.Combine(Scratch.Directory("netswap-crl-"), "ca-crl.pem");
        await File.WriteAllTextAsync(crl, Crl(Path.Combine(certs.Root, "other", "ca"), Path.Combine(certs.Rogue, "client-cert.pem")));
        var e = Assert.Throws<IOException>(() => TlsConfiguration.Load(TlsMode.Require, certs.ServerDirectory, null, null, null, true, null, new HashSet<string>(), crl));
        Assert.Contains("not issued by the configured CA", e.Message);
    }
}
