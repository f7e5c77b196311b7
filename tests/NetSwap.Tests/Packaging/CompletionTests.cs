using NetSwap.Tests.Support;

namespace NetSwap.Tests.Packaging;

/// <summary>
/// Shell completion as shipped (packaging/completion, installed to /usr/share/bash-completion/completions): bash
/// sources the file, and the function it registers asks the program itself for the words, for commands, options and
/// the values an option takes.
/// </summary>
public class CompletionTests
{
    private static readonly string Root = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", ".."));

    /// <summary>COMPREPLY after bash completes <paramref name="line"/> (cursor at its end) with the shipped file.</summary>
    private static async Task<string[]> CompleteAsync(string program, string dll, string line)
    {
        var bin = Scratch.Directory("netswap-completion-");
        var wrapper = Path.Combine(bin, program);
        await File.WriteAllTextAsync(wrapper, $"#!/bin/sh\nexec dotnet {Path.Combine(AppContext.BaseDirectory, dll)} \"$@\"\n");
        File.SetUnixFileMode(wrapper, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var words = line.Split(' ');
        var script = $"""
            source {Path.Combine(Root, "packaging", "completion", program)}
            COMP_LINE='{line}'; COMP_POINT=${"{"}#COMP_LINE{"}"}
            COMP_WORDS=({string.Join(' ', words.Select(w => $"'{w}'"))}); COMP_CWORD={words.Length - 1}
            _{program} {program} '{words[^1]}' '{(words.Length > 1 ? words[^2] : "")}'
            printf '%s\n' "${"{"}COMPREPLY[@]{"}"}"
            """;
        var result = await ExternalTool.RunAsync("bash", ["-c", script], environment: new Dictionary<string, string> { ["PATH"] = bin + ":" + Environment.GetEnvironmentVariable("PATH") });
        Assert.True(result.ExitCode == 0, result.All);
        return result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    [Fact]
    public async Task Netswap_CompletesCommandsOptionsAndValues()
    {
        Assert.Contains("attach", await CompleteAsync("netswap", "netswap.dll", "netswap at"));
        Assert.Equal(["--mode"], await CompleteAsync("netswap", "netswap.dll", "netswap attach --mo"));
        Assert.Equal(["netlink", "persist", "reconnect"], (await CompleteAsync("netswap", "netswap.dll", "netswap attach --mode ")).Order());
        Assert.Contains("--control-socket", await CompleteAsync("netswap", "netswap.dll", "netswap server-status --"));
    }

    [Fact]
    public async Task Netswapd_CompletesOptionsAndStatus()
    {
        Assert.Equal(["--swap-allocation", "--swap-allow"], (await CompleteAsync("netswapd", "netswapd.dll", "netswapd --swap-al")).Order());
        Assert.Equal(["status"], await CompleteAsync("netswapd", "netswapd.dll", "netswapd sta"));
        Assert.Contains("--json", await CompleteAsync("netswapd", "netswapd.dll", "netswapd status --"));
    }
}
