using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace NetSwap.Tests.Support;

/// <summary>netswapd as a real process (the build output next to the tests), its stderr captured.</summary>
public sealed partial class DaemonProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();
    private readonly StringBuilder _stdout = new();

    private DaemonProcess(Process process)
    {
        _process = process;
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (_stderr) { _stderr.AppendLine(e.Data); } } };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (_stdout) { _stdout.AppendLine(e.Data); } } };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
    }

    public static string DaemonDll => Path.Combine(AppContext.BaseDirectory, "netswapd.dll");

    /// <summary>The native AOT build `make dist` leaves (make test builds it first): what the packages ship.</summary>
    public static string NativeDaemon => Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "dist", "netswapd"));

    /// <summary>Starts the native build (dist/netswapd) instead of the JIT-compiled one, optionally under a wrapper.</summary>
    public static DaemonProcess StartNative(string[]? wrapper, params string[] args) => StartWith(wrapper, null, args, native: true);

    /// <summary>The control socket of this instance (each test daemon gets its own, never /run/netswap).</summary>
    public string ControlSocket { get; private set; } = "";

    public int Pid => _process.Id;

    public string Stderr
    {
        get { lock (_stderr) { return _stderr.ToString(); } }
    }

    public string Stdout
    {
        get { lock (_stdout) { return _stdout.ToString(); } }
    }

    public static DaemonProcess Start(params string[] args) => StartWith(null, args);

    /// <summary>Starts netswapd, optionally under a wrapper (ip netns exec …, systemd-socket-activate …).</summary>
    public static DaemonProcess StartWith(string[]? wrapper, params string[] args) => StartWith(wrapper, null, args);

    /// <summary>
    /// Starts netswapd with these environment variables set (RUNTIME_DIRECTORY and the like, as systemd gives them);
    /// with RUNTIME_DIRECTORY the control socket is left to the daemon.
    /// </summary>
    public static DaemonProcess StartWith(string[]? wrapper, IDictionary<string, string>? environment, params string[] args) =>
        StartWith(wrapper, environment, args, native: false);

    private static DaemonProcess StartWith(string[]? wrapper, IDictionary<string, string>? environment, string[] args, bool native)
    {
        // Test daemons answer no discovery on the host's network unless a test asks for it (inside its namespaces).
        if (!args.Contains("--discovery") && !args.Contains("--help") && !args.Contains("--version") && !args.Contains("status"))
        {
            args = [.. args, "--discovery", "off"];
        }
        var control = "";
        if (!args.Contains("--control-socket") && !args.Contains("--help") && !args.Contains("--version")
            && environment?.ContainsKey("RUNTIME_DIRECTORY") != true)
        {
            control = Path.Combine(Scratch.Directory("netswap-ctl-"), "netswapd.sock");
            args = [.. args, "--control-socket", control];
        }
        var start = new ProcessStartInfo(wrapper is not null ? wrapper[0] : native ? NativeDaemon : "dotnet")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[name] = value;
        }
        foreach (var arg in wrapper is null ? [] : native ? wrapper[1..].Append(NativeDaemon) : wrapper[1..].Append("dotnet"))
        {
            start.ArgumentList.Add(arg);
        }
        if (!native)
        {
            start.ArgumentList.Add(DaemonDll);
        }
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        return new DaemonProcess(Process.Start(start)!) { ControlSocket = control };
    }

    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunToEndAsync(params string[] args)
    {
        await using var daemon = Start(args);
        var code = await daemon.WaitForExitAsync(TimeSpan.FromSeconds(30));
        return (code, daemon.Stdout, daemon.Stderr);
    }

    /// <summary>Waits for the "listening on ADDR:PORT" line and returns the port (for --listen 127.0.0.1:0).</summary>
    public async Task<int> WaitForPortAsync()
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            var match = ListeningLine().Match(Stderr);
            if (match.Success && Stderr.Contains("ready", StringComparison.Ordinal))
            {
                return int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            }
            if (_process.HasExited)
            {
                Assert.Fail($"netswapd exited with {_process.ExitCode}:\n{Stderr}");
            }
            await Task.Delay(20);
        }
        Assert.Fail($"netswapd did not start listening:\n{Stderr}");
        return 0;
    }

    public async Task<bool> WaitForLogAsync(string text, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(10));
        while (DateTime.UtcNow < deadline)
        {
            if (Stderr.Contains(text, StringComparison.Ordinal))
            {
                return true;
            }
            await Task.Delay(20);
        }
        return false;
    }

    [GeneratedRegex(@"listening on [^ \n]+:(\d+)")]
    private static partial Regex ListeningLine();

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);

    public void Signal(int signal) => Assert.Equal(0, kill(_process.Id, signal));

    public bool HasExited => _process.HasExited;

    /// <summary>`netswapd status --json` against this daemon, parsed.</summary>
    public async Task<NetSwap.Protocol.Control.ServerStatus> StatusAsync()
    {
        var (code, stdout, stderr) = await RunToEndAsync("status", "--json", "--control-socket", ControlSocket);
        Assert.True(code == 0, stderr);
        return NetSwap.Protocol.Control.ControlJsonContext.Deserialize(stdout)!;
    }

    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"netswapd did not exit within {timeout}:\n{Stderr}");
        }
        _process.WaitForExit();
        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}
