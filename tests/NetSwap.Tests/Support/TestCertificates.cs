using NetSwap.Server.Tls;

namespace NetSwap.Tests.Support;

/// <summary>
/// A site's credentials made once per test run with scripts/netswap-make-certs (openssl), plus a second CA whose client
/// certificate must be refused. Client directories are in libnbd's and qemu's layout (ca-cert.pem, client-*.pem).
/// </summary>
public sealed class TestCertificates
{
    private static readonly Lazy<Task<TestCertificates>> s_instance = new(CreateAsync);

    private TestCertificates(string root) => Root = root;

    public string Root { get; }
    public string ServerDirectory => Path.Combine(Root, "site", "server");
    public string Client(string name) => Path.Combine(Root, "site", "clients", name);
    public string Fingerprints => Path.Combine(Root, "site", "clients", "fingerprints");
    /// <summary>Trusts our CA (to accept the server) but holds a certificate from another CA.</summary>
    public string Rogue => Path.Combine(Root, "rogue");
    /// <summary>Trusts our CA, presents no certificate at all.</summary>
    public string Anonymous => Path.Combine(Root, "anonymous");

    public static Task<TestCertificates> GetAsync() => s_instance.Value;

    private static string Script => Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "scripts", "netswap-make-certs"));

    private static async Task<TestCertificates> CreateAsync()
    {
        var root = Scratch.Directory("netswap-certs-");
        var made = await ExternalTool.RunAsync(Script, [Path.Combine(root, "site"), "--server-name", "netswap.test", "--client", "pc01", "--client", "pc02"]);
        Assert.True(made.ExitCode == 0, made.All);
        var other = await ExternalTool.RunAsync(Script, [Path.Combine(root, "other"), "--server-name", "elsewhere", "--client", "rogue"]);
        Assert.True(other.ExitCode == 0, other.All);
        var certificates = new TestCertificates(root);
        Directory.CreateDirectory(certificates.Rogue);
        File.Copy(Path.Combine(root, "site", "ca", "ca-cert.pem"), Path.Combine(certificates.Rogue, "ca-cert.pem"));
        File.Copy(Path.Combine(root, "other", "clients", "rogue", "client-cert.pem"), Path.Combine(certificates.Rogue, "client-cert.pem"));
        File.Copy(Path.Combine(root, "other", "clients", "rogue", "client-key.pem"), Path.Combine(certificates.Rogue, "client-key.pem"));
        Directory.CreateDirectory(certificates.Anonymous);
        File.Copy(Path.Combine(root, "site", "ca", "ca-cert.pem"), Path.Combine(certificates.Anonymous, "ca-cert.pem"));
        return certificates;
    }

    internal TlsConfiguration Configuration(TlsMode mode, bool verifyClient = true, bool fingerprints = false, params string[] tlsOnly) =>
        TlsConfiguration.Load(mode, ServerDirectory, null, null, null, verifyClient, fingerprints ? FingerprintsFileWith("pc02") : null,
            new HashSet<string>(tlsOnly, StringComparer.Ordinal));

    /// <summary>A fingerprint file listing only the named clients.</summary>
    public string FingerprintsFileWith(params string[] names)
    {
        var path = Path.Combine(Root, "fingerprints-" + string.Join('-', names));
        File.WriteAllLines(path, File.ReadAllLines(Fingerprints).Where(l => names.Any(n => l.EndsWith("# " + n, StringComparison.Ordinal))));
        return path;
    }
}
