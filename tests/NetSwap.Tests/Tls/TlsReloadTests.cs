using NetSwap.Tests.Support;

namespace NetSwap.Tests.Tls;

/// <summary>Certificates and the fingerprint file are reloaded on SIGHUP, without a restart.</summary>
public class TlsReloadTests
{
    [Fact]
    public async Task Sighup_ReloadsTheFingerprintFile_AndTheServerCertificate()
    {
        var certs = await TestCertificates.GetAsync();
        var dir = Scratch.Directory("netswap-tlsreload-");
        var fingerprints = Path.Combine(dir, "fingerprints");
        File.Copy(certs.FingerprintsFileWith("pc01"), fingerprints);
        var serverDir = Path.Combine(dir, "server");
        Directory.CreateDirectory(serverDir);
        foreach (var file in Directory.GetFiles(certs.ServerDirectory))
        {
            File.Copy(file, Path.Combine(serverDir, Path.GetFileName(file)));
        }
        await using var daemon = DaemonProcess.Start("--listen", "127.0.0.1:0", "--swap-dir", Path.Combine(dir, "swap"), "--swap-size", "8M",
            "--tls", "require", "--tls-certificates", serverDir, "--tls-clients", fingerprints);
        var port = await daemon.WaitForPortAsync();
        string Uri(string client) => $"nbds://127.0.0.1:{port}/swap?tls-certificates={certs.Client(client)}";

        Assert.Equal(0, (await ExternalTool.RunAsync("nbdinfo", [Uri("pc01")])).ExitCode);
        Assert.NotEqual(0, (await ExternalTool.RunAsync("nbdinfo", [Uri("pc02")])).ExitCode);

        // Admit pc02 and roll the server certificate: both take effect on SIGHUP.
        File.Copy(certs.FingerprintsFileWith("pc01", "pc02"), fingerprints, overwrite: true);
        // A renewed server certificate with a new key, signed by the site's CA (which the clients trust).
        await ExternalTool.RunOkAsync("openssl", "x509", "-req", "-in", await MakeCsrAsync(dir), "-CA", Path.Combine(certs.Root, "site", "ca", "ca-cert.pem"),
            "-CAkey", Path.Combine(certs.Root, "site", "ca", "ca-key.pem"), "-CAcreateserial", "-days", "30", "-out", Path.Combine(serverDir, "server-cert.pem"),
            "-extfile", await ExtensionsAsync(dir));
        File.Copy(Path.Combine(dir, "new-key.pem"), Path.Combine(serverDir, "server-key.pem"), overwrite: true);
        daemon.Signal(1);
        Assert.True(await daemon.WaitForLogAsync("configuration reloaded"), daemon.Stderr);
        Assert.True(await daemon.WaitForLogAsync("server certificate CN=renewed.test"), daemon.Stderr);
        var admitted = await ExternalTool.RunAsync("nbdinfo", [Uri("pc02")]);
        Assert.True(admitted.ExitCode == 0, admitted.All + daemon.Stderr);
    }

    private static async Task<string> MakeCsrAsync(string dir)
    {
        var csr = Path.Combine(dir, "new.csr");
        await ExternalTool.RunOkAsync("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=renewed.test",
            "-keyout", Path.Combine(dir, "new-key.pem"), "-out", csr);
        return csr;
    }

    private static async Task<string> ExtensionsAsync(string dir)
    {
        var path = Path.Combine(dir, "ext.cnf");
        await File.WriteAllTextAsync(path, "subjectAltName=DNS:renewed.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
        return path;
    }
}
