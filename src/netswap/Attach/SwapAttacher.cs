using System.Globalization;
using System.Net;
using NetSwap.Protocol.Swap;

namespace NetSwap.Client.Attach;

/// <summary>How nbd-client hands the connection to the kernel.</summary>
internal enum NbdClientMode
{
    /// <summary>
    /// The default: nbd-client configures the device by netlink and exits, and `netswap keep` stays resident (locked
    /// in memory): the kernel holds requests back while a connection is dead (NBD_ATTR_DEAD_CONN_TIMEOUT), the keeper
    /// opens the same swap/TOKEN again and hands the new socket to the kernel (NBD_CMD_RECONFIGURE). Nothing swapped
    /// is lost. This is what nbd-client's own netlink -persist does from 3.27 on; Debian 12 has 3.24.
    /// </summary>
    Reconnect,
    /// <summary>
    /// nbd-client 3.24's ioctl mode with -persist. Kept for comparison: in ioctl mode the kernel has no
    /// dead-connection time-out, so requests fail as soon as the connection dies, and in the guest test nbd-client
    /// never reconnected; it survives only cuts shorter than the time-outs.
    /// </summary>
    Persist,
    /// <summary>netlink mode without a keeper: nbd-client configures the device and exits; a cut shorter than the TCP
    /// and NBD time-outs is survived, a broken connection is not.</summary>
    Netlink,
}

internal sealed record AttachRequest(IPEndPoint Server, string Device, long? Size, string Token, bool Encrypt, int? Priority, NbdClientMode Mode)
{
    public static readonly TimeSpan DefaultReconnectFor = TimeSpan.FromMinutes(2);
    public static readonly TimeSpan DefaultIoTimeout = TimeSpan.FromSeconds(5);

    /// <summary>How long requests wait for a new connection after one died (reconnect mode).</summary>
    public TimeSpan ReconnectFor { get; init; } = DefaultReconnectFor;
    /// <summary>TLS to the server, handed to the kernel as kernel TLS (no nbd-client, no process in the data path).</summary>
    public Tls.TlsCredentials? Tls { get; init; }
    /// <summary>--tls=prefer: where the kernel has no kernel TLS, attach without TLS (and say so) instead of failing.</summary>
    public bool TlsPreferred { get; init; }
    /// <summary>The kernel's time-out for one request before it counts the connection dead (reconnect mode): nbd-client's
    /// -timeout, which the kernel keeps for the sockets the keeper hands over later.</summary>
    public TimeSpan IoTimeout { get; init; } = DefaultIoTimeout;
}

/// <summary>What `netswap attach` set up, kept in /run/netswap so that detach and status find it.</summary>
internal sealed record AttachedSwap(string Device, string Target, string Server, string Export, bool Encrypted, long Size, int Keeper = 0)
{
    public string Serialize() => string.Create(CultureInfo.InvariantCulture,
        $"DEVICE={Device}\nTARGET={Target}\nSERVER={Server}\nEXPORT={Export}\nENCRYPTED={(Encrypted ? "yes" : "no")}\nSIZE={Size}\nKEEPER={Keeper}\n");

    public static AttachedSwap? Parse(string text)
    {
        var values = text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1]);
        return values.TryGetValue("DEVICE", out var device) && values.TryGetValue("TARGET", out var target)
            ? new AttachedSwap(device, target, values.GetValueOrDefault("SERVER", "?"), values.GetValueOrDefault("EXPORT", "?"),
                values.GetValueOrDefault("ENCRYPTED") == "yes", long.TryParse(values.GetValueOrDefault("SIZE"), CultureInfo.InvariantCulture, out var size) ? size : 0,
                int.TryParse(values.GetValueOrDefault("KEEPER"), CultureInfo.InvariantCulture, out var keeper) ? keeper : 0)
            : null;
    }
}

/// <summary>Where the system's pieces are: real paths in production, a scratch directory in tests.</summary>
internal sealed record SystemPaths(string SysBlock = "/sys/block", string Dev = "/dev", string State = "/run/netswap/attached", string Swaps = "/proc/swaps", string Keepers = "/run/netswap/keepers",
    string AvailableUlp = Tls.KernelTls.AvailableUlp);

/// <summary>A step that failed: which, the command, and what it said. Everything before it has been undone.</summary>
internal class AttachException(string message) : Exception(message);

/// <summary>This server cannot take the device, and nothing was set up: another that discovery found may be tried.</summary>
internal class PassOverServerException(string message) : AttachException(message);

/// <summary>The server's TLS certificate does not chain to the site's CA: another server may be tried, never this one.</summary>
internal sealed class UntrustedServerException(string message) : PassOverServerException(message);

/// <summary>No connection could be made to the server's NBD port (refused, unreachable, timed out).</summary>
internal sealed class UnreachableServerException(string message) : PassOverServerException(message);

/// <summary>The port took a connection but the NBD negotiation failed (nbd-client's, or the kernel-TLS connector's own).</summary>
internal sealed class NegotiationFailedException(string message) : PassOverServerException(message);

/// <summary>
/// `netswap attach` and `netswap detach`: nbd-client, optionally dm-crypt with a random key, a swap header when the
/// area has none, swapon(2); and back in reverse. A failing step is reported with its command and output, and whatever
/// was set up before it is undone, so a half-done attach never stays behind.
/// </summary>
internal sealed class SwapAttacher(ICommandRunner runner, ISwapSystem swap, SystemPaths paths, TextWriter log)
{
    /// <summary>The netswap executable that runs `netswap keep` (this one).</summary>
    public string KeeperCommand { get; init; } = Environment.ProcessPath ?? "netswap";

    /// <summary>Connects the device over kernel TLS (attach --tls); netlink in production, a double in tests.</summary>
    public IKernelConnector Connector { get; init; } = new KernelTlsConnector();

    /// <summary>
    /// Whether a TCP connection to the server can be made now: null if so, else why not. Asked without TLS, where
    /// nbd-client connects, of every candidate but the last (whose failure is the attach's own).
    /// </summary>
    public Func<IPEndPoint, string?> Reach { get; init; } = server =>
    {
        try
        {
            using var socket = Kernel.KernelSocket.Connect(server, TimeSpan.FromSeconds(3));
            return null;
        }
        catch (System.Net.Sockets.SocketException e)
        {
            return $"cannot connect to {server}: {e.Message}";
        }
    };

    /// <summary>
    /// Attaches from the first of <paramref name="candidates"/> (best first) whose NBD port takes a connection and,
    /// with TLS, whose certificate the site's CA vouches for; each one passed over is named on the log. With one
    /// candidate that is simply the first.
    /// </summary>
    public async Task<AttachedSwap> AttachFirstTrustedAsync(IReadOnlyList<IPEndPoint> candidates, Func<IPEndPoint, AttachRequest> request, CancellationToken cancellationToken = default)
    {
        for (var i = 0; ; i++)
        {
            try
            {
                var attempt = request(candidates[i]);
                if (attempt.Tls is null && i + 1 < candidates.Count && Reach(candidates[i]) is { } unreachable)
                {
                    throw new UnreachableServerException(unreachable);
                }
                return await AttachAsync(attempt, cancellationToken);
            }
            catch (PassOverServerException e) when (i + 1 < candidates.Count)
            {
                log.WriteLine($"netswap: skipping {candidates[i]}: {e.Message}; trying {candidates[i + 1]}");
            }
        }
    }

    public async Task<AttachedSwap> AttachAsync(AttachRequest request, CancellationToken cancellationToken = default)
    {
        var undo = new Stack<(string Command, string[] Arguments)>();
        var keeper = 0;
        try
        {
            request = await CheckKernelTlsAsync(request, cancellationToken);
            var device = request.Device == "auto" ? await FindFreeDeviceAsync(cancellationToken) : request.Device;
            var export = new SwapExportName(request.Token, request.Size).ToString();
            if (request.Tls is not null)
            {
                var security = await Connector.ConnectAsync(device, request, export, cancellationToken);
                undo.Push(("nbd-client", ["-d", device]));
                log.WriteLine($"netswap: {device} connected to {request.Server} over {security}: no process relays its data");
            }
            else
            {
                await ConnectWithNbdClientAsync(device, request, export, cancellationToken);
                undo.Push(("nbd-client", ["-d", device]));
            }
            await WaitUntilConnectedAsync(device, cancellationToken);

            var target = device;
            if (request.Encrypt)
            {
                var name = "netswap-" + Path.GetFileName(device);
                // Plain dm-crypt with a key nobody keeps: what the server stores can never be read, and nothing
                // needs to be remembered across boots (swap is thrown away anyway). --batch-mode: the server's swap
                // header makes cryptsetup ask "are you sure?"; the answer is yes, this is what it is for.
                await StepAsync("set up dm-crypt", "cryptsetup",
                    ["open", "--batch-mode", "--type", "plain", "--cipher", "aes-xts-plain64", "--key-size", "512", "--key-file", "/dev/urandom", device, name], cancellationToken);
                undo.Push(("cryptsetup", ["close", name]));
                target = Path.Combine(paths.Dev, "mapper", name);
                Check("write a swap header", swap.WriteHeader(target));
            }
            else if (!swap.HasHeader(device))
            {
                Check("write a swap header", swap.WriteHeader(device));
            }
            else
            {
                log.WriteLine($"netswap: {device} already carries a swap header from the server; no mkswap");
            }
            if (request.Mode == NbdClientMode.Reconnect)
            {
                // Before swapon: from here on a dead connection is waited out and replaced, never failed.
                keeper = await StartKeeperAsync(device, request, export, cancellationToken);
            }
            Check("enable swap", swap.SwapOn(target, request.Priority));
            var attached = new AttachedSwap(device, target, request.Server.ToString(), export, request.Encrypt, DeviceSize(device), keeper);
            Directory.CreateDirectory(paths.State);
            await File.WriteAllTextAsync(Path.Combine(paths.State, Path.GetFileName(device)), attached.Serialize(), cancellationToken);
            return attached;
        }
        catch (AttachException)
        {
            if (keeper > 0)
            {
                runner.Stop(keeper);
            }
            while (undo.Count > 0)
            {
                var (command, arguments) = undo.Pop();
                var result = await runner.RunAsync(command, arguments, CancellationToken.None);
                log.WriteLine($"netswap: undo: {command} {string.Join(' ', arguments)}: {(result.Succeeded ? "done" : "failed: " + result.Output)}");
            }
            throw;
        }
    }

    /// <summary>
    /// With TLS asked for: the kernel must have kernel TLS (the tls module is loaded when it is not); without it the
    /// attach fails, or with --tls=prefer goes on without TLS, saying so. Never silently in the clear.
    /// </summary>
    private async Task<AttachRequest> CheckKernelTlsAsync(AttachRequest request, CancellationToken cancellationToken)
    {
        if (request.Tls is null || Tls.KernelTls.Missing(paths.AvailableUlp) is null)
        {
            return request;
        }
        await runner.RunAsync("modprobe", ["tls"], cancellationToken);
        if (Tls.KernelTls.Missing(paths.AvailableUlp) is not { } missing)
        {
            return request;
        }
        if (!request.TlsPreferred)
        {
            throw new AttachException($"cannot attach over TLS: {missing}; --tls=prefer would attach without TLS instead");
        }
        log.WriteLine($"netswap: {missing}; --tls=prefer: attaching WITHOUT TLS");
        return request with { Tls = null };
    }

    private async Task ConnectWithNbdClientAsync(string device, AttachRequest request, string export, CancellationToken cancellationToken)
    {
        string[] nbdArguments =
        [
            request.Server.Address.ToString(), request.Server.Port.ToString(CultureInfo.InvariantCulture),
            "-N", export, device, "-swap", "-b", "4096",
            .. request.Mode == NbdClientMode.Persist ? ["-nonetlink", "-persist"] : Array.Empty<string>(),
            .. request.Mode == NbdClientMode.Reconnect ? ["-timeout", Seconds(request.IoTimeout)] : Array.Empty<string>(),
        ];
        var result = await runner.RunAsync("nbd-client", nbdArguments, cancellationToken);
        if (!result.Succeeded)
        {
            // Nothing is set up yet, so another server that discovery found can still be tried: a host that takes TCP
            // on the port but is no NetSwap server (or refuses this client) must not end the attach.
            throw new NegotiationFailedException(FailureMessage("connect the NBD device", "nbd-client", nbdArguments, result));
        }
    }

    private static string Seconds(TimeSpan span) => Math.Max(1, (long)Math.Ceiling(span.TotalSeconds)).ToString(CultureInfo.InvariantCulture);

    /// <summary>Starts `netswap keep` for the device and waits until it watches the kernel's events; its pid.</summary>
    private async Task<int> StartKeeperAsync(string device, AttachRequest request, string export, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(paths.Keepers);
        var ready = Path.Combine(paths.Keepers, Path.GetFileName(device) + ".pid");
        string[] arguments =
        [
            "keep", "--device", device, "--server", request.Server.ToString(), "--export", export,
            "--reconnect-for", Seconds(request.ReconnectFor) + "s", "--ready-file", ready,
            .. request.Tls?.Directory is { } tls ? ["--tls-certificates", tls] : Array.Empty<string>(),
        ];
        var (pid, failure) = await runner.StartResidentAsync(KeeperCommand, arguments, ready, TimeSpan.FromSeconds(15), cancellationToken);
        if (failure is not null)
        {
            throw Failed("start the reconnect keeper", KeeperCommand, arguments, failure);
        }
        log.WriteLine($"netswap: reconnect keeper for {device} running (pid {pid}): a broken connection is replaced within {Seconds(request.ReconnectFor)} s");
        return pid;
    }

    /// <summary>
    /// In ioctl (persist) mode nbd-client returns before its background child has handed the socket to the kernel:
    /// wait until the device is live (a pid and a size in /sys/block) before reading or swapping on it.
    /// </summary>
    private async Task WaitUntilConnectedAsync(string device, CancellationToken cancellationToken)
    {
        var name = Path.GetFileName(device);
        for (var waited = 0; waited < 100; waited++)
        {
            if (File.Exists(Path.Combine(paths.SysBlock, name, "pid")) && ReadSectors(name) > 0)
            {
                return;
            }
            await Task.Delay(100, cancellationToken);
        }
        throw new AttachException($"{device} did not come up within 10 s after nbd-client connected it");
    }

    private static void Check(string what, string? error)
    {
        if (error is not null)
        {
            throw new AttachException($"cannot {what}: {error}");
        }
    }

    private async Task StepAsync(string what, string command, string[] arguments, CancellationToken cancellationToken)
    {
        var result = await runner.RunAsync(command, arguments, cancellationToken);
        if (!result.Succeeded)
        {
            throw Failed(what, command, arguments, result);
        }
    }

    private static AttachException Failed(string what, string command, string[] arguments, CommandResult result) =>
        new(FailureMessage(what, command, arguments, result));

    private static string FailureMessage(string what, string command, string[] arguments, CommandResult result) =>
        $"cannot {what}: `{command} {string.Join(' ', arguments)}` exited {result.ExitCode}{(result.Output.Length > 0 ? ":\n" + result.Output : "")}";

    /// <summary>The first /dev/nbdN the kernel has not connected (no pid, size 0); loads the nbd module if there is none.</summary>
    public async Task<string> FindFreeDeviceAsync(CancellationToken cancellationToken)
    {
        for (var attempt = 0; attempt < 2; attempt++)
        {
            var free = Directory.Exists(paths.SysBlock)
                ? Directory.GetDirectories(paths.SysBlock, "nbd*")
                    .Select(Path.GetFileName)
                    .Where(n => int.TryParse(n![3..], NumberStyles.None, CultureInfo.InvariantCulture, out _))
                    .OrderBy(n => int.Parse(n![3..], CultureInfo.InvariantCulture))
                    .FirstOrDefault(n => !File.Exists(Path.Combine(paths.SysBlock, n!, "pid")) && ReadSectors(n!) == 0)
                : null;
            if (free is not null)
            {
                return Path.Combine(paths.Dev, free);
            }
            if (attempt == 0)
            {
                await runner.RunAsync("modprobe", ["nbd"], cancellationToken);
            }
        }
        throw new AttachException("no free /dev/nbdN: is the nbd module available (modprobe nbd)?");
    }

    private long ReadSectors(string name)
    {
        try
        {
            return long.Parse(File.ReadAllText(Path.Combine(paths.SysBlock, name, "size")).Trim(), CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            return -1;
        }
    }

    private long DeviceSize(string device) => Math.Max(0, ReadSectors(Path.GetFileName(device))) * 512;

    public IReadOnlyList<AttachedSwap> Attached()
    {
        if (!Directory.Exists(paths.State))
        {
            return [];
        }
        return [.. Directory.GetFiles(paths.State).Select(f => AttachedSwap.Parse(File.ReadAllText(f))).OfType<AttachedSwap>().OrderBy(a => a.Device, StringComparer.Ordinal)];
    }

    /// <summary>swapoff, close dm-crypt, nbd-client -d, in that order; false when a step failed (the rest still runs).</summary>
    public async Task<bool> DetachAsync(AttachedSwap attached, CancellationToken cancellationToken = default)
    {
        var ok = true;
        async Task RunAsync(string command, string[] arguments)
        {
            var result = await runner.RunAsync(command, arguments, cancellationToken);
            if (!result.Succeeded)
            {
                ok = false;
                log.WriteLine($"netswap: `{command} {string.Join(' ', arguments)}` exited {result.ExitCode}: {result.Output}");
            }
        }
        if (swap.SwapOff(attached.Target) is { } error)
        {
            ok = false;
            log.WriteLine($"netswap: {error}");
        }
        if (attached.Encrypted)
        {
            await RunAsync("cryptsetup", ["close", Path.GetFileName(attached.Target)]);
        }
        await RunAsync("nbd-client", ["-d", attached.Device]);
        if (attached.Keeper > 0)
        {
            // After the disconnect: a keeper stopped earlier could not have saved a connection dying during swapoff.
            runner.Stop(attached.Keeper);
        }
        if (ok)
        {
            File.Delete(Path.Combine(paths.State, Path.GetFileName(attached.Device)));
        }
        return ok;
    }

    /// <summary>
    /// A swap this program attached that is still on (its target in /proc/swaps, a /dev/mapper name by the dm-N it
    /// points at): a second `attach` — the system's unit after the initramfs already did it — must not take the area
    /// from the first with the same token.
    /// </summary>
    public AttachedSwap? ActiveAttachment()
    {
        var active = SwapUsage();
        return Attached().FirstOrDefault(a => active.ContainsKey(a.Target) || (RealPath(a.Target) is { } real && active.ContainsKey(real)));
    }

    /// <summary>Where a symbolic link ends; null for anything else, a missing path (a record left by a crash) included.</summary>
    private static string? RealPath(string path)
    {
        try
        {
            return File.ResolveLinkTarget(path, returnFinalTarget: true)?.FullName;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>Used bytes of each active swap area, from /proc/swaps.</summary>
    public Dictionary<string, long> SwapUsage()
    {
        var usage = new Dictionary<string, long>(StringComparer.Ordinal);
        if (!File.Exists(paths.Swaps))
        {
            return usage;
        }
        foreach (var line in File.ReadLines(paths.Swaps).Skip(1))
        {
            var fields = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length >= 4 && long.TryParse(fields[3], CultureInfo.InvariantCulture, out var usedKiB))
            {
                usage[fields[0]] = usedKiB * 1024;
            }
        }
        return usage;
    }
}
