namespace NetSwap.Client.Commands;

/// <summary>`netswap detach`: swapoff, close dm-crypt, nbd-client -d, in that order.</summary>
internal static class DetachCommand
{
    public static readonly CommandSpec Spec = new("detach", "",
        "Detach network swap: swapoff, close dm-crypt, nbd-client -d, in that order; the reconnect keeper ends with it.",
        [
            new("--device", "/dev/nbdN", "The device to detach, when more than one is attached."),
            new("--all", null, "Detach every network swap device netswap attached."),
        ],
        reader =>
        {
            var device = reader.Value("--device");
            var all = reader.Flag("--all");
            reader.EnsureConsumed();
            return () => RunAsync(device, all);
        });

    private static async Task<int> RunAsync(string? device, bool all)
    {
        var attacher = AttachCommand.Attacher();
        var attached = attacher.Attached();
        var chosen = device is null ? attached : attached.Where(a => a.Device == device).ToList();
        if (device is null && !all && attached.Count > 1)
        {
            throw new UsageException($"{attached.Count} swap devices are attached: name one with --device, or use --all");
        }
        if (chosen.Count == 0)
        {
            await Console.Error.WriteLineAsync(device is null ? "netswap: no network swap is attached" : $"netswap: {device} is not attached by netswap");
            return device is null ? 0 : 1;
        }
        var ok = true;
        foreach (var swap in chosen)
        {
            ok &= await attacher.DetachAsync(swap);
            await Console.Out.WriteLineAsync($"netswap: {swap.Device} {(ok ? "detached" : "not fully detached")}");
        }
        return ok ? 0 : 1;
    }
}
