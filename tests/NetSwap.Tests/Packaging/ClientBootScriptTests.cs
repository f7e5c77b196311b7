using NetSwap.Client.Attach;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Packaging;

/// <summary>
/// The client's boot glue as shipped (packaging/client): the initramfs-tools script acts only when asked and costs
/// nothing otherwise (a server that got it once ran configure_networking, up to 180 s, at every boot), and the LTSP
/// drop-in turns ltsp.conf's lines into a client.conf that netswap takes. Each runs under busybox sh in a small chroot
/// of its own: /proc/cmdline, /etc/netswap/client.conf, /scripts/functions and /bin/netswap there are the test's, and
/// the fakes write down what was called.
/// </summary>
public class ClientBootScriptTests
{
    private static readonly string Packaging = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "packaging", "client"));

    /// <summary>A root with busybox and its applets (as LTSP's client has), or with <paramref name="shellOnly"/> dash
    /// and nothing else: an initramfs without busybox (initramfs-tools only recommends it) has klibc's sh, a dash, and
    /// no sed, tail or cat; busybox sh would run its own applets and hide a script that needs them.</summary>
    private static string MakeRoot(string? clientConf, string commandLine, bool shellOnly = false)
    {
        var root = Scratch.Directory("netswap-boot-");
        foreach (var dir in new[] { "bin", "sbin", "proc", "dev", "etc/netswap", "scripts", "run", "tmp" })
        {
            Directory.CreateDirectory(Path.Combine(root, dir));
        }
        File.WriteAllText(Path.Combine(root, "dev", "null"), ""); // the scripts' 2>/dev/null: a file will do
        if (shellOnly)
        {
            File.Copy(ExternalTool.Require("dash"), Path.Combine(root, "bin", "sh"));
            foreach (var library in new[] { "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2" })
            {
                Directory.CreateDirectory(Path.GetDirectoryName(root + library)!);
                File.Copy(library, root + library);
            }
        }
        else
        {
            File.Copy(ExternalTool.Require("busybox"), Path.Combine(root, "bin", "busybox"));
            foreach (var applet in new[] { "sh", "cat", "sed", "tail", "mkdir", "echo" })
            {
                File.CreateSymbolicLink(Path.Combine(root, "bin", applet), "busybox");
            }
        }
        File.WriteAllText(Path.Combine(root, "proc", "cmdline"), commandLine + "\n");
        if (clientConf is not null)
        {
            File.WriteAllText(Path.Combine(root, "etc", "netswap", "client.conf"), clientConf);
        }
        File.WriteAllText(Path.Combine(root, "scripts", "functions"),
            "configure_networking() { echo configure_networking >> /tmp/calls; }\nlog_warning_msg() { echo \"warning $*\" >> /tmp/calls; }\n");
        Fake(root, "bin/netswap", "echo \"netswap $*\" >> /tmp/calls\n[ \"$3\" != --config ] || cat \"$4\" > /tmp/config\n");
        Fake(root, "sbin/modprobe", "echo \"modprobe $*\" >> /tmp/calls\n");
        return root;
    }

    private static void Fake(string root, string path, string body)
    {
        var file = Path.Combine(root, path);
        File.WriteAllText(file, "#!/bin/sh\n" + body);
        File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    private static async Task<string> RunInitramfsScriptAsync(string? clientConf, string commandLine)
    {
        var root = MakeRoot(clientConf, commandLine, shellOnly: true);
        File.Copy(Path.Combine(Packaging, "initramfs-script"), Path.Combine(root, "netswap-premount"));
        var run = await ExternalTool.RunAsync("chroot", [root, "/bin/sh", "/netswap-premount"], environment: new Dictionary<string, string> { ["PATH"] = "/sbin:/bin" });
        Assert.True(run.ExitCode == 0, run.All);
        var calls = Path.Combine(root, "tmp", "calls");
        return File.Exists(calls) ? File.ReadAllText(calls).Trim() : "";
    }

    private const string Attached = "configure_networking\nmodprobe nbd\nnetswap attach --auto";

    [Theory]
    // Not asked: nothing at all, above all no configure_networking.
    [InlineData(null, "root=/dev/sda1 ro quiet", "")]
    [InlineData("SWAP=auto\n", "root=/dev/sda1 ro quiet", "")]        // a disk boot: the unit attaches later
    [InlineData("SWAP=no\n", "ip=dhcp root=/dev/nfs", "")]
    [InlineData("SWAP=yes\n", "ip=dhcp root=/dev/nfs netswap=off", "")]
    [InlineData(null, "netswap=10.0.0.1 netswap=off", "")]
    // Asked: by the kernel command line, or by client.conf on a network boot (LTSP5's key and a quoted value too).
    [InlineData(null, "root=/dev/sda1 netswap=10.0.0.1:9572", Attached)]
    [InlineData(null, "ip=dhcp netswap=on", Attached)]
    [InlineData("SWAP=auto\n", "ip=dhcp root=/dev/nfs nfsroot=10.0.0.1:/srv/ltsp", Attached)]
    [InlineData("# lab\nSWAP=\"yes\"\n", "boot=nfs", Attached)]
    [InlineData("NBD_SWAP=True\nNBD_SWAP_SERVER=10.0.0.1\n", "root=/dev/nbd0 nbdroot=10.0.0.1,ltsp", Attached)]
    [InlineData("SWAP=yes\nSWAP=no\n", "ip=dhcp", "")]                // the last line counts, as in netswap
    public async Task InitramfsScript_ActsOnlyWhenAsked(string? clientConf, string commandLine, string expected)
    {
        Assert.Equal(expected, await RunInitramfsScriptAsync(clientConf, commandLine));
    }

    [Fact]
    public async Task InitramfsScript_AnswersPrereqs()
    {
        var root = MakeRoot(null, "");
        File.Copy(Path.Combine(Packaging, "initramfs-script"), Path.Combine(root, "s"));
        var run = await ExternalTool.RunAsync("chroot", [root, "/bin/sh", "/s", "prereqs"]);
        Assert.Equal(0, run.ExitCode);
        Assert.False(File.Exists(Path.Combine(root, "tmp", "calls")));
    }

    private static async Task<(string Calls, string? Config, string Stderr)> RunLtspDropInAsync(string variables)
    {
        var root = MakeRoot(null, "");
        File.Copy(Path.Combine(Packaging, "ltsp-56-netswap.sh"), Path.Combine(root, "56-netswap.sh"));
        // As LTSP's init applet does: the client's ltsp.conf variables set, the drop-in sourced, its main called.
        var run = await ExternalTool.RunAsync("chroot", [root, "/bin/sh", "-c", variables + "\n. /56-netswap.sh\nnetswap_main\necho main=$?"],
            environment: new Dictionary<string, string> { ["PATH"] = "/sbin:/bin" });
        Assert.True(run.ExitCode == 0 && run.Stdout.Contains("main=0", StringComparison.Ordinal), run.All);
        var calls = Path.Combine(root, "tmp", "calls");
        var config = Path.Combine(root, "tmp", "config");
        return (File.Exists(calls) ? File.ReadAllText(calls).Trim() : "", File.Exists(config) ? File.ReadAllText(config) : null, run.Stderr);
    }

    [Fact]
    public async Task LtspDropIn_AttachesWhenLtspConfSaysSo_WithAClientConfNetswapTakes()
    {
        Assert.Equal(("", null), (await RunLtspDropInAsync("")) is var none ? (none.Calls, none.Config) : default);
        Assert.Equal("", (await RunLtspDropInAsync("NETSWAP=no")).Calls);

        var yes = await RunLtspDropInAsync("NETSWAP=yes\nNETSWAP_SERVER=10.0.5.1\nNETSWAP_SIZE=256M\nNETSWAP_ENCRYPT=yes");
        Assert.Equal("netswap attach --auto --config /run/netswap/ltsp-client.conf", yes.Calls);
        Assert.Equal("SWAP=yes\nSERVER=10.0.5.1\nSIZE=256M\nENCRYPT=yes\n", yes.Config);
        Assert.Equal(new ClientConfig { Swap = SwapPolicy.Yes, Server = "10.0.5.1", Size = 256L << 20, Encrypt = true },
            ClientConfig.Parse("ltsp-client.conf", yes.Config!.Split('\n')));

        // LTSP5's names, as an old lts.conf had them.
        var ltsp5 = await RunLtspDropInAsync("NBD_SWAP=True\nNBD_SWAP_SERVER=10.0.5.2\nNBD_SWAP_PORT=9210\nENCRYPT_SWAP=True");
        Assert.Equal(new ClientConfig { Swap = SwapPolicy.Yes, Server = "10.0.5.2", Port = 9210, Encrypt = true },
            ClientConfig.Parse("ltsp-client.conf", ltsp5.Config!.Split('\n')));

        var auto = await RunLtspDropInAsync("NETSWAP=auto\nNETSWAP_THRESHOLD=512M");
        Assert.Equal(new ClientConfig { Swap = SwapPolicy.Auto, Threshold = 512L << 20 }, ClientConfig.Parse("c", auto.Config!.Split('\n')));

        var wrong = await RunLtspDropInAsync("NETSWAP=maybe");
        Assert.Equal("", wrong.Calls);
        Assert.Contains("NETSWAP=maybe in ltsp.conf is not yes, auto or no", wrong.Stderr);
    }
    /// <summary>
    /// The initramfs-tools hook, run as update-initramfs runs it (DESTDIR, hook-functions), with the functions faked:
    /// TLS in client.conf brings the kernel TLS modules and the machine's credentials into the image, and a warning
    /// that the key is in it; without TLS, neither.
    /// </summary>
    [Theory]
    [InlineData("require", true)]
    [InlineData("prefer", true)]
    [InlineData("off", false)]
    public async Task InitramfsHook_CarriesTheTlsCredentialsAndModules_OnlyWhenTlsIsOn(string tls, bool carried)
    {
        var work = Scratch.Directory("netswap-hook-");
        var destination = Path.Combine(work, "initramfs");
        var credentials = Path.Combine(work, "tls");
        Directory.CreateDirectory(destination);
        Directory.CreateDirectory(credentials);
        foreach (var file in new[] { "ca-cert.pem", "client-cert.pem", "client-key.pem" })
        {
            File.WriteAllText(Path.Combine(credentials, file), file);
        }
        var calls = Path.Combine(work, "calls");
        File.WriteAllText(Path.Combine(work, "hook-functions"),
            $"copy_exec() {{ echo \"copy_exec $*\" >> {calls}; }}\nmanual_add_modules() {{ echo \"manual_add_modules $*\" >> {calls}; }}\n");
        var conf = Path.Combine(work, "client.conf");
        File.WriteAllText(conf, $"SWAP=auto\nTLS=off\nTLS=\"{tls}\"\nTLS_CERTIFICATES={credentials}\n");
        var run = await ExternalTool.RunAsync("sh", [Path.Combine(Packaging, "initramfs-hook")], environment: new Dictionary<string, string>
        {
            ["DESTDIR"] = destination,
            ["NETSWAP_HOOK_FUNCTIONS"] = Path.Combine(work, "hook-functions"),
            ["NETSWAP_CLIENT_CONF"] = conf,
        });
        Assert.True(run.ExitCode == 0, run.All);
        var called = await File.ReadAllTextAsync(calls);
        Assert.Contains("copy_exec /usr/bin/netswap /bin", called);
        Assert.Contains("manual_add_modules nbd", called);
        Assert.Equal(carried, called.Contains("manual_add_modules tls gcm ghash-generic ctr chacha20poly1305 chacha_generic poly1305_generic", StringComparison.Ordinal));
        Assert.Equal(carried, File.Exists(destination + Path.Combine(credentials, "client-key.pem")));
        Assert.Equal(carried, File.Exists(destination + Path.Combine(credentials, "ca-cert.pem")));
        Assert.Equal(carried, run.Stderr.Contains("the initramfs now holds this machine's TLS key", StringComparison.Ordinal));
        Assert.True(File.Exists(Path.Combine(destination, "etc", "netswap", "client.conf")));
    }
}
