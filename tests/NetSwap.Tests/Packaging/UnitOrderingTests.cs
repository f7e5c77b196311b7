using NetSwap.Tests.Support;

namespace NetSwap.Tests.Packaging;

/// <summary>
/// The shipped systemd units against each network manager's real units (from Debian's own packages, unpacked into a
/// root of their own with systemd's): `systemd-analyze verify` builds the boot transaction and must find no ordering
/// cycle and nothing else to say. netswap-client.service once was Before=swap.target and After=network-online.target,
/// a cycle on NetworkManager systems that systemd broke by dropping swap.target's job; the last test shows this
/// check finds exactly that.
/// </summary>
public class UnitOrderingTests
{
    private static readonly string Repository = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", ".."));
    private static readonly string Units = Path.Combine(Repository, "packaging", "systemd");

    /// <summary>The manager's package and the units it enables (systemd's own package is always there).</summary>
    public static TheoryData<string, string[]> Managers() => new()
    {
        { "network-manager", ["NetworkManager.service", "NetworkManager-wait-online.service"] },
        { "systemd", ["systemd-networkd.service", "systemd-networkd-wait-online.service"] },
        { "ifupdown", ["networking.service", "ifupdown-wait-online.service"] },
    };

    private static readonly SemaphoreSlim s_download = new(1);

    /// <summary>Debian's package, downloaded once a test run (apt-get download: no installation, no maintainer script).</summary>
    private static async Task<string> PackageAsync(string name)
    {
        var cache = Path.Combine(Path.GetTempPath(), "netswap-unit-packages");
        Directory.CreateDirectory(cache);
        await s_download.WaitAsync();
        try
        {
            var existing = Directory.GetFiles(cache, $"{name}_*.deb");
            if (existing.Length > 0)
            {
                return existing[0];
            }
            var download = await ExternalTool.RunAsync("sh", ["-c", $"cd '{cache}' && apt-get download {name}"], TimeSpan.FromMinutes(5));
            var found = Directory.GetFiles(cache, $"{name}_*.deb");
            Assert.True(found.Length == 1, $"apt-get download {name}: {download.All}");
            return found[0];
        }
        finally
        {
            s_download.Release();
        }
    }

    /// <summary>A root with systemd's units, the manager's, ours, and the executables our units name.</summary>
    private static async Task<string> RootAsync(string manager, string[] enable, string clientUnit)
    {
        var root = Scratch.Directory("netswap-units-");
        foreach (var package in new[] { "systemd", manager }.Distinct())
        {
            var unpack = await ExternalTool.RunAsync("dpkg-deb", ["-x", await PackageAsync(package), root]);
            Assert.True(unpack.ExitCode == 0, unpack.All);
        }
        var unitDir = Path.Combine(root, "lib", "systemd", "system");
        File.Copy(Path.Combine(Units, "netswapd.service"), Path.Combine(unitDir, "netswapd.service"));
        File.Copy(Path.Combine(Units, "netswapd.socket"), Path.Combine(unitDir, "netswapd.socket"));
        File.WriteAllText(Path.Combine(unitDir, "netswap-client.service"), clientUnit);
        foreach (var (dir, program) in new[] { ("usr/sbin", "netswapd"), ("usr/bin", "netswap"), ("bin", "kill") })
        {
            Directory.CreateDirectory(Path.Combine(root, dir));
            File.WriteAllText(Path.Combine(root, dir, program), "#!/bin/sh\n");
            File.SetUnixFileMode(Path.Combine(root, dir, program), (UnixFileMode)0b111_101_101);
        }
        // As the packages leave them: the manager's units, the server's socket and the client's unit enabled by their
        // [Install] sections (symbolic links made here: systemctl --root would run the SysV scripts' update-rc.d).
        foreach (var unit in enable.Append("netswapd.socket").Append("netswap-client.service"))
        {
            foreach (var target in WantedBy(File.ReadAllLines(Path.Combine(unitDir, unit))))
            {
                var wants = Path.Combine(root, "etc", "systemd", "system", target + ".wants");
                Directory.CreateDirectory(wants);
                File.CreateSymbolicLink(Path.Combine(wants, unit), "/lib/systemd/system/" + unit);
            }
        }
        return root;
    }

    private static IEnumerable<string> WantedBy(IEnumerable<string> unitFile) => unitFile
        .Where(l => l.StartsWith("WantedBy=", StringComparison.Ordinal))
        .SelectMany(l => l["WantedBy=".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries));

    /// <summary>Runs of `systemd-analyze verify` per check: a cycle missed in a quarter of runs slips through all
    /// twelve about once in 10⁷.</summary>
    private const int Runs = 12;

    private static async Task<string[]> VerifyRunsAsync(string root, params string[] units)
    {
        var said = new string[Runs];
        for (var i = 0; i < Runs; i++)
        {
            said[i] = await VerifyAsync(root, units);
        }
        return said;
    }

    private static async Task<string> VerifyAsync(string root, params string[] units)
    {
        var verify = await ExternalTool.RunAsync("systemd-analyze", [$"--root={root}", "--man=no", "verify", .. units],
            environment: new Dictionary<string, string> { ["SYSTEMD_LOG_LEVEL"] = "info" });
        return verify.All.Trim();
    }

    [Theory]
    [MemberData(nameof(Managers))]
    public async Task ShippedUnits_FormNoCycle_WithTheNetworkManagersUnits(string manager, string[] enable)
    {
        var root = await RootAsync(manager, enable, File.ReadAllText(Path.Combine(Units, "netswap-client.service")));
        foreach (var said in await VerifyRunsAsync(root, "netswap-client.service", "netswapd.socket", "netswapd.service", "default.target"))
        {
            Assert.DoesNotContain("cycle", said);
            Assert.True(said.Length == 0, $"systemd-analyze verify with {manager}:\n{said}");
        }
    }

    [Fact]
    public async Task TheCheck_FindsTheCycleTheOldClientUnitMade_OnNetworkManagerSystems()
    {
        var old = File.ReadAllText(Path.Combine(Units, "netswap-client.service"))
            .Replace("After=network-online.target", "After=network-online.target\nBefore=swap.target\nDefaultDependencies=no", StringComparison.Ordinal)
            .Replace("WantedBy=multi-user.target", "WantedBy=swap.target", StringComparison.Ordinal);
        var root = await RootAsync("network-manager", ["NetworkManager.service", "NetworkManager-wait-online.service"], old);
        var runs = await VerifyRunsAsync(root, "netswap-client.service");
        var said = runs.FirstOrDefault(r => r.Contains("Found ordering cycle", StringComparison.Ordinal));
        Assert.True(said is not null, $"no run of {Runs} found the cycle:\n{string.Join("\n--\n", runs)}");
        Assert.Contains("deleted to break ordering cycle", said);
    }
}
