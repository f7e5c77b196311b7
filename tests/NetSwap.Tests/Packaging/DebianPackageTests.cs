using NetSwap.Tests.Support;

namespace NetSwap.Tests.Packaging;

/// <summary>
/// `make deb` builds both packages with dpkg-buildpackage, lintian finds no error and no warning (make deb fails
/// otherwise), and they hold what they must. Then the proof on a real Debian: a Debian 12 root made from Debian's
/// packages (mmdebstrap), where apt installs both packages with their dependencies and runs their maintainer scripts,
/// and apt purge takes every trace away again. (Booting that system under systemd is make e2e-install's part.)
/// </summary>
public class DebianPackageTests(DebianPackageTests.Packages packages) : IClassFixture<DebianPackageTests.Packages>
{
    private static readonly string Repository = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", ".."));

    /// <summary>`make deb`, once for the class.</summary>
    public sealed class Packages : IAsyncLifetime
    {
        public string Server { get; private set; } = "";
        public string Client { get; private set; } = "";
        public string BuildLog { get; private set; } = "";

        public async Task InitializeAsync()
        {
            var build = await ExternalTool.RunAsync("make", ["-C", Repository, "deb"], TimeSpan.FromMinutes(15));
            BuildLog = build.All;
            Assert.True(build.ExitCode == 0, "make deb failed:\n" + string.Join('\n', build.All.Split('\n').TakeLast(60)));
            var version = (await ExternalTool.RunOkAsync("dpkg-parsechangelog", "-l", Path.Combine(Repository, "debian", "changelog"), "-S", "Version")).Trim();
            var arch = (await ExternalTool.RunOkAsync("dpkg", "--print-architecture")).Trim();
            Server = Path.Combine(Repository, "dist", $"netswapd_{version}_{arch}.deb");
            Client = Path.Combine(Repository, "dist", $"netswap-client_{version}_{arch}.deb");
        }

        public Task DisposeAsync() => Task.CompletedTask;
    }

    [Fact]
    public async Task MakeDeb_LeavesBothPackagesInDist_LintianClean()
    {
        Assert.True(File.Exists(packages.Server), packages.BuildLog);
        Assert.True(File.Exists(packages.Client), packages.BuildLog);
        // make deb ran lintian with --fail-on error,warning; run it again here so that the test says what it found.
        var lintian = await ExternalTool.RunAsync("lintian", ["--fail-on", "error,warning", packages.Server, packages.Client], TimeSpan.FromMinutes(5));
        Assert.True(lintian.ExitCode == 0, lintian.All);
        Assert.DoesNotContain("E: ", lintian.Stdout);
        Assert.DoesNotContain("W: ", lintian.Stdout);
    }

    [Fact]
    public async Task Packages_HoldTheirFiles_ConffilesAndDependencies()
    {
        var server = await ExternalTool.RunOkAsync("dpkg-deb", "-c", packages.Server);
        foreach (var path in new[]
        {
            "./usr/sbin/netswapd", "./usr/sbin/netswap-make-certs", "./lib/systemd/system/netswapd.service", "./lib/systemd/system/netswapd.socket",
            "./etc/netswap/netswapd.toml", "./usr/share/man/man8/netswapd.8.gz", "./usr/share/man/man5/netswapd.toml.5.gz", "./usr/share/man/man8/netswap-make-certs.8.gz",
            "./usr/share/doc/netswapd/examples/inetd.conf", "./usr/share/doc/netswapd/examples/xinetd.netswapd", "./usr/share/doc/netswapd/examples/services",
            "./usr/share/doc/netswapd/copyright", "./usr/share/bash-completion/completions/netswapd",
        })
        {
            Assert.Contains(path + "\n", server + "\n");
        }
        Assert.DoesNotContain("netswap-client", server);
        Assert.DoesNotContain("initramfs", server);

        var client = await ExternalTool.RunOkAsync("dpkg-deb", "-c", packages.Client);
        foreach (var path in new[]
        {
            "./usr/bin/netswap", "./lib/systemd/system/netswap-client.service", "./etc/netswap/client.conf",
            "./usr/share/initramfs-tools/hooks/netswap", "./usr/share/initramfs-tools/scripts/init-premount/netswap",
            "./usr/share/ltsp/client/init/56-netswap.sh", "./usr/share/man/man8/netswap.8.gz", "./usr/share/man/man5/netswap-client.conf.5.gz",
            "./usr/share/doc/netswap-client/examples/avahi-netswap.service", "./usr/share/bash-completion/completions/netswap",
        })
        {
            Assert.Contains(path + "\n", client + "\n");
        }
        Assert.DoesNotContain("/netswapd", client);

        Assert.Equal("/etc/netswap/netswapd.toml", (await ExternalTool.RunOkAsync("dpkg-deb", "-I", packages.Server, "conffiles")).Trim());
        Assert.Equal("/etc/netswap/client.conf", (await ExternalTool.RunOkAsync("dpkg-deb", "-I", packages.Client, "conffiles")).Trim());
        var depends = await ExternalTool.RunOkAsync("dpkg-deb", "-f", packages.Server, "Depends");
        Assert.Contains("libssl3", depends);   // loaded by the TLS code at run time, which dpkg-shlibdeps cannot see
        Assert.Contains("adduser", depends);
        Assert.Contains("nbd-client", await ExternalTool.RunOkAsync("dpkg-deb", "-f", packages.Client, "Depends"));
        // The update-initramfs trigger, so that an installed client package lands in the next initramfs.
        Assert.Contains("update-initramfs", await ExternalTool.RunOkAsync("dpkg-deb", "-I", packages.Client, "triggers"));
    }

    [Fact]
    public async Task OnDebian12_AptInstallsBoth_TheServiceIsSetUp_AndPurgeLeavesNothing()
    {
        var root = Path.Combine(Scratch.Directory("netswap-debroot-"), "root");
        var debootstrap = await ExternalTool.RunAsync(ExternalTool.Require("mmdebstrap"),
            // With the packages' dependencies in it already, so that apt installs the two files without a download.
            ["--variant=apt", "--include=adduser,libssl3,nbd-client", "bookworm", root, "http://deb.debian.org/debian"], TimeSpan.FromMinutes(10));
        Assert.True(debootstrap.ExitCode == 0, debootstrap.All);
        File.Copy(packages.Server, Path.Combine(root, "tmp", "netswapd.deb"));
        File.Copy(packages.Client, Path.Combine(root, "tmp", "netswap-client.deb"));
        var proc = Path.Combine(root, "proc");
        await ExternalTool.RunOkAsync("mount", "-t", "proc", "proc", proc);
        try
        {
            async Task<ExternalTool.Result> In(params string[] command) =>
                await ExternalTool.RunAsync("chroot", [root, .. command], TimeSpan.FromMinutes(10),
                    environment: new Dictionary<string, string> { ["DEBIAN_FRONTEND"] = "noninteractive", ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin" });
            var before = (await In("find", "/", "-xdev")).Stdout.Split('\n').Append("/.").ToHashSet();

            var install = await In("apt-get", "install", "-y", "--no-install-recommends", "/tmp/netswapd.deb", "/tmp/netswap-client.deb");
            Assert.True(install.ExitCode == 0, install.All);

            // The system user, its state directory, the socket enabled (not the service: a connection or a probe
            // starts it), the client's unit enabled.
            var user = (await In("getent", "passwd", "netswap")).Stdout.Trim().Split(':');
            Assert.True(user.Length == 7, "no netswap user");
            Assert.Equal(("/var/lib/netswap", "/usr/sbin/nologin"), (user[5], user[6]));
            Assert.Equal("700 netswap netswap", (await In("stat", "-c", "%a %U %G", "/var/lib/netswap")).Stdout.Trim());
            Assert.True(File.Exists(Path.Combine(root, "etc/systemd/system/sockets.target.wants/netswapd.socket")), "netswapd.socket not enabled");
            Assert.True(File.Exists(Path.Combine(root, "etc/systemd/system/multi-user.target.wants/netswap-client.service")), "netswap-client.service not enabled");
            Assert.False(File.Exists(Path.Combine(root, "etc/systemd/system/multi-user.target.wants/netswapd.service")), "netswapd.service enabled beside its socket");

            // The shipped configuration works as it is, checked as the service's user; both programs run there.
            var check = await In("setpriv", "--reuid=netswap", "--regid=netswap", "--clear-groups", "/usr/sbin/netswapd", "--check-config", "--swap-dir", "/var/lib/netswap");
            Assert.True(check.ExitCode == 0, check.All);
            Assert.Contains("netswap", (await In("/usr/bin/netswap", "version")).All);
            var files = (await In("dpkg", "-L", "netswapd", "netswap-client")).Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);

            var purge = await In("apt-get", "purge", "-y", "netswapd", "netswap-client");
            Assert.True(purge.ExitCode == 0, purge.All);
            Assert.NotEqual(0, (await In("getent", "passwd", "netswap")).ExitCode);
            Assert.NotEqual(0, (await In("getent", "group", "netswap")).ExitCode);
            // Debian 12 is merged-/usr: /lib/systemd in a package's list is /usr/lib/systemd on disk.
            static string Merged(string path) => path is "/lib" or "/bin" or "/sbin" || path.StartsWith("/lib/", StringComparison.Ordinal)
                || path.StartsWith("/bin/", StringComparison.Ordinal) || path.StartsWith("/sbin/", StringComparison.Ordinal) ? "/usr" + path : path;
            var left = files.Where(f => f.Length > 1 && !before.Contains(Merged(f)) && Path.Exists(root + f)).ToList();
            Assert.True(left.Count == 0, "left after purge: " + string.Join(", ", left));
            var after = (await In("find", "/etc", "/var/lib", "/lib/systemd", "/usr", "-xdev")).Stdout.Split('\n')
                .Where(f => f.Contains("netswap", StringComparison.Ordinal)).ToList();
            Assert.True(after.Count == 0, "left after purge: " + string.Join(", ", after));
        }
        finally
        {
            await ExternalTool.RunAsync("umount", ["-l", proc]);
        }
    }
}
