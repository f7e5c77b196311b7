using System.Globalization;
using System.Runtime.InteropServices;
using NetSwap.Client.Kernel;

namespace NetSwap.Client.Attach;

/// <summary>
/// `netswap keep --device /dev/nbdN --server ADDR:PORT --export NAME`: the resident half of reconnect mode, started by
/// `netswap attach`. It sets the device's dead-connection time-out, learns what the export is (size, flags, first block), locks
/// itself in memory (it must run while swap is unreachable), says it is ready, and from then on logs to the kernel
/// log (/dev/kmsg: the console, dmesg, the journal) with its standard streams on /dev/null.
/// </summary>
internal static class Keeper
{
    /// <summary>
    /// All on the calling thread, which becomes the keeper: nothing here awaits, so the connection that learns the
    /// export's size is also the rehearsal of a reconnect on the thread that will reconnect (its malloc arena kept and
    /// locked), and no other thread takes over.
    /// </summary>
    public static Task<int> RunAsync(string device, string serverText, string export, TimeSpan reconnectFor, string? readyFile, Tls.TlsCredentials? tls = null) =>
        Task.FromResult(Run(device, serverText, export, reconnectFor, readyFile, tls));

    private static int Run(string device, string serverText, string export, TimeSpan reconnectFor, string? readyFile, Tls.TlsCredentials? tls)
    {
        var name = Path.GetFileName(device);
        if (!NbdNetlink.TryParseIndex(device, out var index))
        {
            throw new UsageException($"--device: '{device}' is not /dev/nbdN");
        }
        var server = Commands.ServerAddress.Parse(serverText);

        // Its own session: a hang-up of whatever started it must not end it.
        Libc.SetSid();
        var nativeHeap = KeepNativeHeap() ? "native heap kept" : "native heap not kept (mallopt refused)";
        // The credentials are read here, once: a reconnect must not read a file (see TlsClientContext).
        using var tlsContext = tls is null ? null : Tls.TlsClientContext.Create(tls);
        using var netlink = NbdNetlink.Open();
        // The request time-out is nbd-client's (-timeout); the dead-connection time-out only netlink can set.
        netlink.Reconfigure(index, deadConnectionSeconds: (ulong)reconnectFor.TotalSeconds);
        var firstBlock = ReadFirstBlock(device);
        // Locked as pages are touched (MCL_ONFAULT): what the keeper has used stays in RAM, while the runtime's
        // reserved-but-untouched heap is not made resident (locking it all at once cost 28 MiB and an OOM kill on a
        // 32 MiB guest). The OOM killer must never pick it either: it is what brings swap back.
        var locked = Libc.MLockAll(Libc.MCL_CURRENT | Libc.MCL_FUTURE | Libc.MCL_ONFAULT) == 0 ? null : Libc.Describe(Libc.LastError);
        try
        {
            File.WriteAllText("/proc/self/oom_score_adj", "-1000\n");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        // After the lock: what this connection touches (the TLS handshake, the key derivation) stays resident for the
        // reconnects that will need the same, with swap unreachable.
        var (size, flags) = Describe(server, export, tlsContext);
        var deviceSize = DeviceSize(name);
        if (deviceSize != (long)size)
        {
            throw new IOException($"{device} is {deviceSize} B but the server's '{export}' is {size} B: not the export this device is connected to");
        }

        var kmsg = new KernelLog("netswap-keep");
        var keeper = new ReconnectKeeper(new KeptExport(index, server, export, size, flags, firstBlock, tlsContext), new NetlinkKernelLink(netlink, "/sys/block"), kmsg.Write)
        {
            ReconnectFor = reconnectFor,
            Memory = Memory,
        };
        if (readyFile is not null)
        {
            File.WriteAllText(readyFile, Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        }
        DetachStandardStreams();
        WarmHeap();
        var reclaim = PrepareForReclaim();
        kmsg.Write(ReconnectKeeper.Notice, $"keeping nbd{index} connected to {server} ('{export}', {size >> 20} MiB{(tls is null ? "" : ", kernel TLS")}): requests wait up to {reconnectFor.TotalSeconds:0} s for a reconnect; {Memory()}{(locked is null ? "" : $"; not locked in memory ({locked})")}; {reclaim}, {nativeHeap}");
        return keeper.Run(CancellationToken.None);
    }

    /// <summary>
    /// Once the connection has died, every page the kernel wants to swap out queues behind the dead device, and any
    /// allocation that has to reclaim memory by swapping waits there too — up to the whole dead-connection time-out,
    /// with the keeper that would end the wait among the waiters (seen in guest runs). So the thread that reconnects
    /// is made a flusher of that I/O, as the kernel asks of user-space block-device servers (PR_SET_IO_FLUSHER: its
    /// allocations, page faults included, reclaim without starting I/O), runs real-time (SCHED_FIFO, the lowest
    /// priority: the page allocator lets a real-time thread dip a little below the minimum watermark, where everyone
    /// else waits on reclaim; the keeper sleeps in netlink until a connection dies, so it takes no CPU from anyone).
    /// Says what it is, or why not, for the keeper's first log line.
    /// </summary>
    private static unsafe string PrepareForReclaim()
    {
        var flusher = Libc.Prctl(Libc.PR_SET_IO_FLUSHER, 1, 0, 0, 0) == 0 ? "I/O flusher" : $"not an I/O flusher ({Libc.Describe(Libc.LastError)})";
        var priority = 1;
        // Not passed on: a thread the runtime starts from this one is an ordinary thread again.
        var realTime = Libc.SchedSetScheduler(0, Libc.SCHED_FIFO | Libc.SCHED_RESET_ON_FORK, &priority) == 0 ? "real-time" : $"not real-time ({Libc.Describe(Libc.LastError)})";
        return $"{flusher}, {realTime}";
    }

    /// <summary>The device's first block, read past the page cache (O_DIRECT): what the server really holds.</summary>
    private static unsafe byte[] ReadFirstBlock(string device)
    {
        const int size = 4096;
        var fd = Libc.Open(device, Libc.O_RDONLY | Libc.O_DIRECT | Libc.O_CLOEXEC);
        if (fd < 0)
        {
            throw new IOException($"cannot open {device}: {Libc.Describe(Libc.LastError)}");
        }
        var buffer = (byte*)NativeMemory.AlignedAlloc(size, size);
        try
        {
            var n = Libc.PRead(fd, buffer, size, 0);
            if (n != size)
            {
                throw new IOException($"cannot read the first block of {device}: {(n < 0 ? Libc.Describe(Libc.LastError) : $"{n} bytes")}");
            }
            return new ReadOnlySpan<byte>(buffer, size).ToArray();
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
            Libc.Close(fd);
        }
    }

    /// <summary>
    /// NBD_OPT_INFO of the export over the same kind of connection a reconnect uses, the traffic keys derived as a
    /// reconnect derives them (and dropped: this connection is not handed over). Blocking streams: it completes on the
    /// calling thread.
    /// </summary>
    private static (ulong Size, NetSwap.Protocol.Nbd.NbdTransmissionFlags Flags) Describe(System.Net.IPEndPoint server, string export, Tls.TlsClientContext? tls)
    {
        using var connection = KernelBoundConnection.OpenAsync(server, tls, TimeSpan.FromSeconds(5), CancellationToken.None).GetAwaiter().GetResult();
        var probe = connection.Probe;
        try
        {
            var description = probe.InfoAsync(export, CancellationToken.None).GetAwaiter().GetResult()
                ?? throw new IOException($"the server at {server} does not describe '{export}'");
            connection.RehearseKeys();
            return (description.Size, description.Flags);
        }
        finally
        {
            probe.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    /// <summary>
    /// What native code (OpenSSL's handshake above all) frees stays in the process: glibc would otherwise give the top
    /// of its heap back to the system past 128 KiB, and serve large blocks by mmap and return them at free, so that the
    /// next handshake — during a reconnect, with swap dead — would need fresh pages. Kept, they stay locked (MCL_ONFAULT).
    /// </summary>
    private static bool KeepNativeHeap() =>
        (Libc.MallOpt(Libc.M_TRIM_THRESHOLD, int.MaxValue) & Libc.MallOpt(Libc.M_MMAP_THRESHOLD, 32 << 20)) == 1;

    /// <summary>
    /// What the keeper allocates once a connection has died must not need a fresh page: under memory pressure getting
    /// one can mean swapping out to the very device that is dead, and the keeper then waits as long as the kernel does
    /// (seen in one guest run out of five: blocked in its first log line for the whole 120 s, no attempt made). So, while
    /// memory is still plentiful, allocate and drop half a MiB (those pages are touched, hence locked by MCL_ONFAULT) and
    /// compact, so that later allocations start over in memory that is already resident.
    /// </summary>
    private static void WarmHeap()
    {
        var scratch = new byte[512][];
        for (var i = 0; i < scratch.Length; i++)
        {
            scratch[i] = new byte[1024];
        }
        GC.KeepAlive(scratch);
        scratch = null;
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
    }

    /// <summary>Resident (and of that anonymous) and locked memory, and the thread count, from /proc/self/status.</summary>
    private static string Memory()
    {
        try
        {
            var lines = File.ReadAllLines("/proc/self/status");
            string Field(string key) => lines.FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal))?[key.Length..].Trim() ?? "?";
            // Anonymous memory is what the keeper takes from the machine; the rest of its RSS is its binary's pages.
            return $"RSS {Field("VmRSS:")} (anonymous {Field("RssAnon:")}), locked {Field("VmLck:")}, {Field("Threads:")} threads";
        }
        catch (IOException)
        {
            return "memory unknown";
        }
    }

    private static long DeviceSize(string name)
    {
        var text = File.ReadAllText(Path.Combine("/sys/block", name, "size")).Trim();
        return long.Parse(text, CultureInfo.InvariantCulture) * 512;
    }

    private static void DetachStandardStreams()
    {
        var devnull = Libc.Open("/dev/null", 2 /* O_RDWR */);
        if (devnull < 0)
        {
            return;
        }
        for (var fd = 0; fd <= 2; fd++)
        {
            Libc.Dup2(devnull, fd);
        }
        if (devnull > 2)
        {
            Libc.Close(devnull);
        }
    }
}

/// <summary>Lines into the kernel log with a syslog priority, as early-boot daemons write them; stderr when there is none.</summary>
internal sealed unsafe class KernelLog(string tag)
{
    private readonly int _fd = Libc.Open("/dev/kmsg", Libc.O_WRONLY | Libc.O_CLOEXEC);

    public void Write(int priority, string message)
    {
        var line = System.Text.Encoding.UTF8.GetBytes($"<{priority}>{tag}[{Environment.ProcessId}]: {message}\n");
        if (_fd >= 0)
        {
            fixed (byte* p = line)
            {
                if (Libc.Write(_fd, p, line.Length) == line.Length)
                {
                    return;
                }
            }
        }
        Console.Error.Write(System.Text.Encoding.UTF8.GetString(line));
    }
}
