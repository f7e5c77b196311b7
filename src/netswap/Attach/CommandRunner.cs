using System.Diagnostics;
using System.Text;

namespace NetSwap.Client.Attach;

/// <summary>What a command printed and how it ended.</summary>
internal sealed record CommandResult(int ExitCode, string Output)
{
    public bool Succeeded => ExitCode == 0;
}

/// <summary>Runs the system's tools (nbd-client, cryptsetup, mkswap, swapon…); a test double records them instead.</summary>
internal interface ICommandRunner
{
    Task<CommandResult> RunAsync(string command, IReadOnlyList<string> arguments, CancellationToken cancellationToken = default);
}

internal sealed class ProcessRunner : ICommandRunner
{
    public async Task<CommandResult> RunAsync(string command, IReadOnlyList<string> arguments, CancellationToken cancellationToken = default)
    {
        var start = new ProcessStartInfo(command)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            // No command may wait for an answer on a terminal: its standard input is closed at once.
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return new CommandResult(127, $"{command}: {e.Message}");
        }
        using (process)
        {
            process.StandardInput.Close();
            // Read both streams to the end: a command that fills a pipe must not hang us.
            var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
            var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
            await process.WaitForExitAsync(cancellationToken);
            var output = new StringBuilder((await stdout).Trim());
            var error = (await stderr).Trim();
            if (error.Length > 0)
            {
                output.Append(output.Length > 0 ? "\n" : "").Append(error);
            }
            return new CommandResult(process.ExitCode, output.ToString());
        }
    }
}
