using NetSwap.Client.Commands;

try
{
    return await ClientCommandLine.RunAsync(args);
}
finally
{
    // NETSWAP_RSS=1: report the peak resident memory, to show the client fits a 32 MB machine.
    if (Environment.GetEnvironmentVariable("NETSWAP_RSS") is not null && File.Exists("/proc/self/status"))
    {
        var peak = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        await Console.Error.WriteLineAsync($"netswap: peak RSS {peak?["VmHWM:".Length..].Trim()}");
    }
}
