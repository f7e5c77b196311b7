using System.Diagnostics;
using System.Text;

namespace NetSwap.Tests.Support;

/// <summary>
/// Runs the real NBD clients (qemu-io, qemu-img, qemu-nbd, nbdinfo, nbdsh, nbdcopy). A missing tool fails the test:
/// `make test` installs them, and an interoperability test must never pass by skipping.
/// </summary>
public static class ExternalTool
{
    public static string Require(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin").Split(':').Append("/usr/sbin").Append("/usr/bin"))
        {
            var path = Path.Combine(dir, name);
            if (File.Exists(path))
            {
                return path;
            }
        }
        Assert.Fail($"required tool '{name}' is not installed; run 'make test' (it installs every test dependency)");
        return name;
    }

    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public string All => Stdout + Stderr;
    }

    public static async Task<Result> RunAsync(string tool, IEnumerable<string> args, TimeSpan? timeout = null, IDictionary<string, string>? environment = null, string? stdin = null)
    {
        var start = new ProcessStartInfo(Require(tool))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin is not null,
            UseShellExecute = false,
        };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        if (environment is not null)
        {
            foreach (var (key, value) in environment)
            {
                start.Environment[key] = value;
            }
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (stdin is not null)
        {
            await process.StandardInput.WriteAsync(stdin);
            process.StandardInput.Close();
        }
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromMinutes(3));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{tool} {string.Join(' ', args)} did not finish in time");
        }
        return new Result(process.ExitCode, await stdout, await stderr);
    }

    public static async Task<string> RunOkAsync(string tool, params string[] args)
    {
        var result = await RunAsync(tool, args);
        Assert.True(result.ExitCode == 0, $"{tool} {string.Join(' ', args)} exited {result.ExitCode}:\n{result.All}");
        return result.Stdout;
    }

    public static string Describe(IEnumerable<string> lines)
    {
        var text = new StringBuilder();
        foreach (var line in lines.TakeLast(40))
        {
            text.AppendLine(line);
        }
        return text.ToString();
    }
}
