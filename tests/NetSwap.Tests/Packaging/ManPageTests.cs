using System.Text.RegularExpressions;
using NetSwap.Client.Attach;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Packaging;

/// <summary>
/// The manual pages (docs/man, roff written for this project; issue 15): each renders without a warning, and each
/// says every option, key and command the programs know, so a new option cannot ship undocumented.
/// </summary>
public partial class ManPageTests
{
    private static readonly string Pages = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "docs", "man"));

    public static TheoryData<string> All() => ["netswapd.8", "netswapd.toml.5", "netswap.8", "netswap-client.conf.5", "netswap-make-certs.8"];

    /// <summary>The page as text: no hyphenation, long lines, plain ASCII (\- renders as -).</summary>
    private static async Task<string> RenderAsync(string page)
    {
        var result = await ExternalTool.RunAsync(ExternalTool.Require("groff"), ["-man", "-Tascii", "-ww", "-rHY=0", "-rLL=400n", "-P", "-cbou", Path.Combine(Pages, page)]);
        Assert.True(result.ExitCode == 0 && result.Stderr.Length == 0, $"{page}: {result.All}");
        return result.Stdout;
    }

    [Theory]
    [MemberData(nameof(All))]
    public async Task Renders_WithoutAWarning(string page)
    {
        var text = await RenderAsync(page);
        Assert.Contains("NAME", text);
        Assert.Contains("SEE ALSO", text);
    }

    [GeneratedRegex(@"^\s{2,6}(?:-\w, )?--([\w-]+)(?: <[^>]+>)?\s+(.*)$", RegexOptions.Multiline)]
    private static partial Regex DaemonOption();

    [Fact]
    public async Task Netswapd8_HasEveryOption_AndTheToml5EveryKey()
    {
        var help = await ExternalTool.RunAsync("dotnet", [DaemonProcess.DaemonDll, "--help"]);
        var options = DaemonOption().Matches(help.Stdout).Select(m => (Name: m.Groups[1].Value, CommandLineOnly: m.Groups[2].Value.Contains("(command line only)", StringComparison.Ordinal))).ToList();
        Assert.True(options.Count > 40, help.All);
        var page = await RenderAsync("netswapd.8");
        var missing = options.Where(o => !page.Contains("--" + o.Name, StringComparison.Ordinal)).Select(o => o.Name).ToList();
        Assert.True(missing.Count == 0, "netswapd.8 lacks --" + string.Join(", --", missing));
        var toml = await RenderAsync("netswapd.toml.5");
        var keys = options.Where(o => !o.CommandLineOnly && o.Name is not ("help" or "version"))
            .Where(o => !Regex.IsMatch(toml, $@"^\s+{Regex.Escape(o.Name)} = ", RegexOptions.Multiline)).Select(o => o.Name).ToList();
        Assert.True(keys.Count == 0, "netswapd.toml.5 lacks the keys " + string.Join(", ", keys));
    }

    [GeneratedRegex(@"--[a-z][\w-]+")]
    private static partial Regex ClientOption();

    [Fact]
    public async Task Netswap8_HasEveryCommandAndOption()
    {
        var commands = new[] { "discover", "attach", "detach", "keep", "status", "server-status", "exports" };
        var page = await RenderAsync("netswap.8");
        var options = new List<string>();
        foreach (var command in commands)
        {
            var help = await ExternalTool.RunAsync("dotnet", [Path.Combine(AppContext.BaseDirectory, "netswap.dll"), command, "--help"]);
            Assert.True(help.ExitCode == 0, help.All);
            options.AddRange(ClientOption().Matches(help.Stdout).Select(m => m.Value));
        }
        options = [.. options.Distinct()];
        Assert.True(options.Count > 15, string.Join(' ', options));
        var missing = options.Where(o => !page.Contains(o, StringComparison.Ordinal)).ToList();
        Assert.True(missing.Count == 0, "netswap.8 lacks " + string.Join(", ", missing));
        foreach (var command in commands)
        {
            Assert.Contains("netswap " + command, page);
        }
    }

    [Fact]
    public async Task ClientConf5_HasEveryKey_AndTheKernelCommandLine()
    {
        // The parser names the keys it knows when it meets one it does not.
        var known = Assert.Throws<FormatException>(() => ClientConfig.Parse("c", ["BOGUS=1"])).Message;
        var keys = Regex.Match(known, @"known: ([A-Z_, ]+)\)").Groups[1].Value.Split(", ");
        Assert.True(keys.Length >= 7, known);
        var page = await RenderAsync("netswap-client.conf.5");
        var missing = keys.Where(k => !page.Contains(k + "=", StringComparison.Ordinal)).ToList();
        Assert.True(missing.Count == 0, "netswap-client.conf.5 lacks " + string.Join(", ", missing));
        Assert.Contains("netswap=off", page);
    }
}
