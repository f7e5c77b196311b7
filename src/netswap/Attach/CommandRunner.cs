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

    /// <summary>
    /// Starts a helper that stays resident and waits until it has created <paramref name="readyFile"/>: its pid, or
    /// the helper's exit code and output when it ended (or hung) before it was ready.
    /// </summary>
    Task<(int Pid, CommandResult? Failure)> StartResidentAsync(string command, IReadOnlyList<string> arguments, string readyFile, TimeSpan wait, CancellationToken cancellationToken = default);

    /// <summary>Asks a resident helper to end (SIGTERM); false when it was already gone.</summary>
    bool Stop(int pid);
}

internal sealed partial class ProcessRunner : ICommandRunner
{
    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    public bool Stop(int pid) => pid > 0 && Kill(pid, 15) == 0;

    public async Task<(int Pid, CommandResult? Failure)> StartResidentAsync(string command, IReadOnlyList<string> arguments, string readyFile, TimeSpan wait, CancellationToken cancellationToken = default)
    {
        // Its output comes to us until it is ready; then it points its standard streams at /dev/null and the pipes
        // end, so nothing that reads our output waits for a resident process.
        var start = StartInfo(command, arguments);
        File.Delete(readyFile);
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (0, new CommandResult(127, $"{command}: {e.Message}"));
        }
        using (process)
        {
            process.StandardInput.Close();
            var stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
            var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
            var deadline = DateTime.UtcNow + wait;
            while (!File.Exists(readyFile))
            {
                if (process.HasExited || DateTime.UtcNow > deadline)
                {
                    var hung = !process.HasExited;
                    if (hung)
                    {
                        process.Kill();
                    }
                    await process.WaitForExitAsync(CancellationToken.None);
                    var output = ((await stdout).Trim() + "\n" + (await stderr).Trim()).Trim();
                    return (0, new CommandResult(hung ? 124 : process.ExitCode, hung ? $"not ready within {wait.TotalSeconds:0} s{(output.Length > 0 ? ": " + output : "")}" : output));
                }
                await Task.Delay(50, cancellationToken);
            }
            return (process.Id, null);
        }
    }

    /// <summary>Output and errors piped to us; standard input piped too, and closed at once: no command may wait for
    /// an answer on a terminal.</summary>
    private static ProcessStartInfo StartInfo(string command, IReadOnlyList<string> arguments)
    {
        var start = new ProcessStartInfo(command)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        return start;
    }

    public async Task<CommandResult> RunAsync(string command, IReadOnlyList<string> arguments, CancellationToken cancellationToken = default)
    {
        var start = StartInfo(command, arguments);
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
