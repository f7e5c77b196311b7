using NetSwap.Daemon.Configuration;

namespace NetSwap.Tests.Daemon;

/// <summary>The config file and command line: every error names where it is (file, line, key) and what is wrong.</summary>
public class ConfigurationTests
{
    private static ConfigFileException Fails(string toml)
    {
        var settings = new DaemonSettings();
        return Assert.Throws<ConfigFileException>(() => ConfigFile.Apply(toml, "/etc/netswap/test.toml", settings));
    }

    [Fact]
    public void ValidFile_SetsEverything()
    {
        var settings = new DaemonSettings();
        ConfigFile.Apply("""
            # comment
            listen = ["127.0.0.1:9000", "[::1]:9000"]
            handshake-timeout = "3s"
            max-requests-in-flight = 16
            keepalive-count = 5
            tcp-user-timeout = "45s"
            default-export = "disk"
            verbose = 1

            [exports.disk]
            path = "/srv/disk.img"
            description = "lab disk"

            [exports.images]
            path = "/srv/images.img"
            readonly = true
            """, "test.toml", settings);
        Assert.Equal(["127.0.0.1:9000", "[::1]:9000"], settings.EffectiveListen.Select(e => e.ToString()));
        Assert.Equal(TimeSpan.FromSeconds(3), settings.Server.HandshakeTimeout);
        Assert.Equal(16, settings.Server.MaxRequestsInFlight);
        Assert.Equal(5, settings.Server.Tcp.KeepAliveCount);
        Assert.Equal(TimeSpan.FromSeconds(45), settings.Server.Tcp.UserTimeout);
        Assert.Equal("disk", settings.DefaultExport);
        Assert.Equal(1, settings.Verbosity);
        Assert.Equal(2, settings.Exports.Count);
        Assert.Equal(("disk", "/srv/disk.img", false, "lab disk"), (settings.Exports[0].Name, settings.Exports[0].Path, settings.Exports[0].ReadOnly, settings.Exports[0].Description));
        Assert.True(settings.Exports[1].ReadOnly);
    }

    [Fact]
    public void SyntaxError_NamesFileAndLine()
    {
        var e = Fails("listen = [\"127.0.0.1:9000\"]\nhandshake-timeout = \n");
        Assert.Equal(2, e.Line);
        Assert.StartsWith("/etc/netswap/test.toml:2:", e.Message);
    }

    [Fact]
    public void UnknownKey_NamesLineAndKey()
    {
        var e = Fails("\n\nhandshake-timout = \"3s\"\n");
        Assert.Equal((3, "handshake-timout"), (e.Line, e.Key));
        Assert.Contains("unknown setting", e.Message);
    }

    [Theory]
    [InlineData("handshake-timeout = \"soon\"", "handshake-timeout", "not a duration")]
    [InlineData("handshake-timeout = \"0s\"", "handshake-timeout", "greater than zero")]
    [InlineData("max-requests-in-flight = 0", "max-requests-in-flight", "from 1 to 4096")]
    [InlineData("listen = [\"localhost:9572\"]", "listen", "not ADDRESS:PORT")]
    [InlineData("listen = \"10.0.0.1\"", "listen", "not ADDRESS:PORT")]
    [InlineData("keepalive-count = true", "keepalive-count", "whole number")]
    [InlineData("handshake-timeout = [\"1s\", \"2s\"]", "handshake-timeout", "not a list")]
    [InlineData("export = \"a=/b\"", "export", "unknown setting")]
    public void BadValue_NamesLineKeyAndProblem(string line, string key, string problem)
    {
        var e = Fails("# first line\n" + line + "\n");
        Assert.Equal((2, key), (e.Line, e.Key));
        Assert.Contains(problem, e.Message);
        Assert.StartsWith($"/etc/netswap/test.toml:2: key '{key}':", e.Message);
    }

    [Fact]
    public void BadExportTable_NamesIt()
    {
        Assert.Equal("exports.disk", Fails("[exports.disk]\nreadonly = true\n").Key);
        var e = Fails("[exports.disk]\npath = \"/x\"\nreadonly = \"maybe\"\n");
        Assert.Equal((3, "exports.disk.readonly"), (e.Line, e.Key));
        Assert.Equal("other", Fails("[other]\nx = 1\n").Key);
        Assert.Equal("exports.disk.size", Fails("[exports.disk]\npath = \"/x\"\nsize = 4\n").Key);
    }

    [Fact]
    public void CommandLine_OverridesTheFile_AndReplacesItsListenList()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, "listen = [\"127.0.0.1:9000\"]\nhandshake-timeout = \"3s\"\n[exports.a]\npath = \"/a\"\n");
            var settings = NetSwap.Daemon.Daemon.LoadSettings(["--config", path, "--listen", "127.0.0.2:9001", "--handshake-timeout=4s", "--export", "b=/b,readonly", "-vv"]);
            Assert.Equal(["127.0.0.2:9001"], settings.EffectiveListen.Select(e => e.ToString()));
            Assert.Equal(TimeSpan.FromSeconds(4), settings.Server.HandshakeTimeout);
            Assert.Equal(["a", "b"], settings.Exports.Select(e => e.Name));
            Assert.True(settings.Exports[1].ReadOnly);
            Assert.Equal(2, settings.Verbosity);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData(new[] { "--bogus" }, "unknown option '--bogus'")]
    [InlineData(new[] { "--listen" }, "needs a value")]
    [InlineData(new[] { "--handshake-timeout", "x" }, "option '--handshake-timeout': 'x' is not a duration")]
    [InlineData(new[] { "--export", "noequals" }, "not NAME=PATH")]
    [InlineData(new[] { "--export", "a=/b,sideways" }, "unknown export flag 'sideways'")]
    [InlineData(new[] { "--check-config=yes" }, "takes no value")]
    [InlineData(new[] { "stray" }, "unexpected argument 'stray'")]
    public void CommandLineErrors_NameTheOption(string[] args, string message)
    {
        var e = Assert.Throws<UsageException>(() => NetSwap.Daemon.Daemon.LoadSettings(args));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Help_DocumentsEverySetting()
    {
        var help = CommandLine.Help();
        foreach (var spec in SettingTable.All)
        {
            Assert.Contains("--" + spec.Name, help);
        }
    }

    [Theory]
    [InlineData("512M", 512L << 20)]
    [InlineData("4G", 4L << 30)]
    [InlineData("64k", 64L << 10)]
    [InlineData("1TiB", 1L << 40)]
    [InlineData("4096", 4096L)]
    public void Sizes_Parse(string text, long expected) => Assert.Equal(expected, ValueParsers.Size(text));

    [Theory]
    [InlineData("500ms", 0.5)]
    [InlineData("10s", 10)]
    [InlineData("2m", 120)]
    [InlineData("1h", 3600)]
    [InlineData("7", 7)]
    public void Durations_Parse(string text, double seconds) => Assert.Equal(TimeSpan.FromSeconds(seconds), ValueParsers.Duration(text));
}
