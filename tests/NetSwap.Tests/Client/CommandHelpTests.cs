using NetSwap.Tests.Support;

namespace NetSwap.Tests.Client;

/// <summary>
/// Every command answers --help with its own usage and exit 0 (issue 15: `netswap attach --help` and `netswapd status
/// --help` said "unknown option" and exited 2); a usage error is one line and exit 2.
/// </summary>
public class CommandHelpTests
{
    private static readonly string Client = Path.Combine(AppContext.BaseDirectory, "netswap.dll");

    [Theory]
    [InlineData("attach", "--auto")]
    [InlineData("detach", "--all")]
    [InlineData("discover", "--address")]
    [InlineData("status", "--json")]
    [InlineData("server-status", "--control-socket")]
    [InlineData("exports", "SERVER")]
    [InlineData("keep", "--ready-file")]
    public async Task ClientCommand_Help_IsThatCommandsUsage(string command, string mentions)
    {
        foreach (var form in new[] { new[] { command, "--help" }, [command, "-h"], ["help", command] })
        {
            var result = await ExternalTool.RunAsync("dotnet", [Client, .. form]);
            Assert.True(result.ExitCode == 0, result.All);
            Assert.StartsWith($"Usage: netswap {command}", result.Stdout);
            Assert.Contains(mentions, result.Stdout);
            // Its own help only: not the list of every command.
            Assert.DoesNotContain("Commands:", result.Stdout);
            Assert.Empty(result.Stderr);
        }
    }

    [Fact]
    public async Task UnknownCommandOrOption_IsOneLine_Exit2()
    {
        var unknown = await ExternalTool.RunAsync("dotnet", [Client, "bogus", "--help"]);
        Assert.Equal(2, unknown.ExitCode);
        Assert.Equal("netswap: unknown command 'bogus' (see netswap --help)", unknown.Stderr.Trim());
        var option = await ExternalTool.RunAsync("dotnet", [Client, "discover", "--bogus"]);
        Assert.Equal(2, option.ExitCode);
        Assert.Single(option.Stderr.Trim().Split('\n'));
    }

    [Fact]
    public async Task DaemonStatus_Help_AndTheDaemonsHelpNamesStatus()
    {
        var status = await ExternalTool.RunAsync("dotnet", [DaemonProcess.DaemonDll, "status", "--help"]);
        Assert.True(status.ExitCode == 0, status.All);
        Assert.Contains("Usage:\n  netswapd status [options]", status.Stdout);
        Assert.Contains("--control-socket <PATH>", status.Stdout);
        var help = await ExternalTool.RunAsync("dotnet", [DaemonProcess.DaemonDll, "--help"]);
        Assert.Matches(@"Commands:\n  status +Ask the netswapd running on this host", help.Stdout);
    }
}
