using System.Security.Cryptography.X509Certificates;
using NetSwap.Protocol.Nbd;
using NetSwap.Server.Tls;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Tls;

/// <summary>NBD_OPT_STARTTLS per the spec, client keys by CA and by fingerprint, TLS-only exports, real TLS clients.</summary>
public class TlsTests
{
    private const long MiB = 1L << 20;

    private static X509Certificate2 ClientCertificate(string directory)
    {
        using var pem = X509Certificate2.CreateFromPemFile(Path.Combine(directory, "client-cert.pem"), Path.Combine(directory, "client-key.pem"));
        return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
    }

    private static async Task<ServerHarness> StartAsync(TlsConfiguration tls)
    {
        var server = await ServerHarness.StartAsync(("disk", 16 * MiB, false), ("ro", MiB, true));
        server.Context.Tls = tls;
        return server;
    }

    [Fact]
    public async Task RequireMode_RefusesEverythingButStartTlsInTheClear_ThenServesOverTls()
    {
        var certs = await TestCertificates.GetAsync();
        await using var server = await StartAsync(certs.Configuration(TlsMode.Require));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        Assert.Equal(NbdOptionReplyType.ErrTlsReqd, (await client.InfoOrGoAsync(NbdOption.Go, "disk")).Final);
        Assert.Equal(NbdOptionReplyType.ErrTlsReqd, await client.SimpleOptionAsync(NbdOption.List));
        Assert.Equal(NbdOptionReplyType.ErrTlsReqd, await client.SimpleOptionAsync(NbdOption.StructuredReply));
        Assert.Equal(NbdOptionReplyType.ErrInvalid, await client.SimpleOptionAsync(NbdOption.StartTls, new byte[1]));
        Assert.Equal(NbdOptionReplyType.Ack, await client.StartTlsAsync(ClientCertificate(certs.Client("pc01"))));
        Assert.Equal(NbdOptionReplyType.ErrInvalid, await client.SimpleOptionAsync(NbdOption.StartTls));
        await client.GoAsync("disk");
        var data = new byte[300000];
        Random.Shared.NextBytes(data);
        Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Write, 4097, (uint)data.Length, payload: data)).Error);
        Assert.Equal(data, (await client.RequestAsync(NbdCommand.Read, 4097, (uint)data.Length)).Data);
        Assert.True(server.Log.Contains("TLS established (Tls1"));
        Assert.True(server.Log.Contains("client certificate CN=pc01, SHA-256"));
    }

    [Fact]
    public async Task ExportNameInTheClear_ClosesTheConnection_InRequireMode()
    {
        var certs = await TestCertificates.GetAsync();
        await using var server = await StartAsync(certs.Configuration(TlsMode.Require));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        await client.SendOptionAsync(NbdOption.ExportName, "disk"u8.ToArray());
        Assert.True(await client.IsClosedAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task NegotiationBeforeStartTls_IsDiscarded()
    {
        var certs = await TestCertificates.GetAsync();
        await using var server = await StartAsync(certs.Configuration(TlsMode.On, verifyClient: false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        Assert.True(await client.NegotiateStructuredRepliesAsync());
        Assert.Equal(NbdOptionReplyType.Ack, await client.StartTlsAsync());
        // Structured replies were agreed in the clear: after STARTTLS they are gone until asked again.
        var go = await client.InfoOrGoAsync(NbdOption.Go, "disk");
        Assert.Equal(NbdOptionReplyType.Ack, go.Final);
        Assert.True((go.Flags & NbdTransmissionFlags.SendDf) == 0);
        var reply = await client.RequestAsync(NbdCommand.Read, 0, 512);
        Assert.Equal(0, reply.Chunks);   // a simple reply
    }

    [Fact]
    public async Task VerifyClient_RefusesNoCertificate_AndAnotherCasCertificate()
    {
        var certs = await TestCertificates.GetAsync();
        await using var server = await StartAsync(certs.Configuration(TlsMode.Require));
        var anonymous = await ExternalTool.RunAsync("nbdinfo", [server.TlsUri("disk", certs.Anonymous)]);
        Assert.NotEqual(0, anonymous.ExitCode);
        Assert.True(await server.Log.WaitForAsync("TLS refused: no client certificate"));
        var rogue = await ExternalTool.RunAsync("nbdinfo", [server.TlsUri("disk", certs.Rogue)]);
        Assert.NotEqual(0, rogue.ExitCode);
        Assert.True(await server.Log.WaitForAsync("TLS refused: client certificate does not chain to the CA"));
        Assert.True(server.Log.Contains("client certificate CN=rogue"));
        var good = await ExternalTool.RunAsync("nbdinfo", ["--json", server.TlsUri("disk", certs.Client("pc02"))]);
        Assert.True(good.ExitCode == 0, good.All);
        Assert.Contains("\"TLS\": true", good.Stdout);
    }

    [Fact]
    public async Task Fingerprints_AdmitListedKeys_RefuseOthers_WithoutACa()
    {
        var certs = await TestCertificates.GetAsync();
        var tls = TlsConfiguration.Load(TlsMode.Require, null, Path.Combine(certs.ServerDirectory, "server-cert.pem"),
            Path.Combine(certs.ServerDirectory, "server-key.pem"), null, verifyClient: false, certs.FingerprintsFileWith("pc02"), new HashSet<string>());
        await using var server = await StartAsync(tls);
        var listed = await ExternalTool.RunAsync("nbdinfo", ["--json", server.TlsUri("disk", certs.Client("pc02"))]);
        Assert.True(listed.ExitCode == 0, listed.All);
        var unlisted = await ExternalTool.RunAsync("nbdinfo", [server.TlsUri("disk", certs.Client("pc01"))]);
        Assert.NotEqual(0, unlisted.ExitCode);
        Assert.True(await server.Log.WaitForAsync("TLS refused: client certificate fingerprint is not listed"));
    }

    [Fact]
    public async Task TlsOnlyExports_NeedTls_OthersDoNot_InSelectiveMode()
    {
        var certs = await TestCertificates.GetAsync();
        await using var server = await StartAsync(certs.Configuration(TlsMode.On, verifyClient: false, tlsOnly: "disk"));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        Assert.Equal(NbdOptionReplyType.ErrTlsReqd, (await client.InfoOrGoAsync(NbdOption.Info, "disk")).Final);
        Assert.Equal(NbdOptionReplyType.Ack, (await client.InfoOrGoAsync(NbdOption.Info, "ro")).Final);
        var list = await ExternalTool.RunOkAsync("nbdinfo", "--list", $"nbd://127.0.0.1:{server.Port}");
        Assert.DoesNotContain("export=\"disk\"", list);
        Assert.Contains("export=\"ro\"", list);
        Assert.Equal(NbdOptionReplyType.Ack, await client.StartTlsAsync());
        Assert.Equal(NbdOptionReplyType.Ack, (await client.InfoOrGoAsync(NbdOption.Go, "disk")).Final);
    }

    [Fact]
    public async Task StartTls_WhenTlsIsOff_IsPolicy()
    {
        await using var server = await ServerHarness.StartAsync(("disk", MiB, false));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        Assert.Equal(NbdOptionReplyType.ErrPolicy, await client.StartTlsAsync());
    }

    [Fact]
    public async Task QemuIo_WithTlsCreds_WritesAndVerifies()
    {
        var certs = await TestCertificates.GetAsync();
        await using var server = await StartAsync(certs.Configuration(TlsMode.Require));
        var result = await ExternalTool.RunAsync("qemu-io", ["--object", $"tls-creds-x509,id=tls0,endpoint=client,dir={certs.Client("pc01")}",
            "--image-opts", $"driver=nbd,host=127.0.0.1,port={server.Port},export=disk,tls-creds=tls0",
            "-c", "write -P 0x6b 511 70001", "-c", "read -P 0x6b 511 70001", "-c", "write -z -f 1M 64k", "-c", "read -P 0 1M 64k"]);
        Assert.True(result.ExitCode == 0, result.All);
        Assert.DoesNotContain("fail", result.All, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("read 70001/70001 bytes at offset 511", result.Stdout);
    }

    [Fact]
    public async Task QemuImgConvert_InAndOut_AndQemuNbdList_OverTls()
    {
        var certs = await TestCertificates.GetAsync();
        await using var server = await StartAsync(certs.Configuration(TlsMode.Require));
        var creds = $"tls-creds-x509,id=tls0,endpoint=client,dir={certs.Client("pc01")}";
        var nbd = $"driver=nbd,host=127.0.0.1,port={server.Port},export=disk,tls-creds=tls0";
        var source = Path.Combine(server.Directory, "source.raw");
        var back = Path.Combine(server.Directory, "back.raw");
        var data = new byte[16 * MiB];
        new Random(11).NextBytes(data.AsSpan(0, (int)(5 * MiB)));   // data, then zeros (which qemu-img may write as zeroes)
        await File.WriteAllBytesAsync(source, data);

        await ExternalTool.RunOkAsync("qemu-img", "convert", "-n", "--object", creds, "-f", "raw", source, "--target-image-opts", nbd);
        await ExternalTool.RunOkAsync("qemu-img", "convert", "--object", creds, "--image-opts", nbd, "-O", "raw", back);
        var returned = await File.ReadAllBytesAsync(back);
        Assert.True(data.AsSpan().SequenceEqual(returned), "what came back over TLS differs from what went in");

        var list = await ExternalTool.RunOkAsync("qemu-nbd", "--list", "--object", creds, "--tls-creds", "tls0", "-b", "127.0.0.1", "-p", server.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Contains("exports available: 2", list);
        Assert.Contains("export: 'disk'", list);
        Assert.Contains("size:  16777216", list);
    }
}
