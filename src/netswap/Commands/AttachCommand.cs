using System.Globalization;
using System.Net;
using NetSwap.Protocol.Discovery;

namespace NetSwap.Client.Commands;

/// <summary>`netswap attach [SERVER[:PORT]]`: discover or take a server, attach swap from it, turn it on.</summary>
internal static class AttachCommand
{
    public static readonly CommandSpec Spec = new("attach", "[SERVER[:PORT]]",
        "Attach swap: discover a server when none is given, connect a free /dev/nbdN with nbd-client (-swap -b 4096), dm-crypt with a random key (--encrypt), mkswap when needed, swapon. Of the servers found, one whose NBD port cannot be reached or where the negotiation fails is skipped (named) for the next. Swap attached here already (and no --device given): says so and exits 0.",
        [
            new("--device", "/dev/nbdN|auto", "The NBD device to use, or auto (the first free one). Default: auto."),
            new("--size", "SIZE", "Size of the swap area to ask for. Default: client.conf's SIZE, else the server's default for this machine."),
            new("--token", "TOKEN", "The token that names this machine's area (swap/TOKEN). Default: client.conf's TOKEN, else one from /etc/machine-id or the MAC address."),
            new("--encrypt", null, "dm-crypt in plain mode with a random key that nobody keeps, between the NBD device and swap (needs cryptsetup)."),
            new("--priority", "N", "swapon priority (-1 to 32767). Default: client.conf's PRIORITY, else the kernel's."),
            new("--mode", "reconnect|netlink|persist", "reconnect: nbd-client by netlink plus `netswap keep`, which replaces a broken connection within --reconnect-for while the kernel holds requests; netlink: nbd-client by netlink alone; persist: nbd-client -persist (ioctl). Default: reconnect.",
                ["reconnect", "netlink", "persist"]),
            new("--reconnect-for", "DURATION", "How long the kernel holds requests while the keeper reconnects. Default: 2m."),
            new("--io-timeout", "DURATION", "A request unanswered this long counts the connection dead. Default: 5s."),
            new("--auto", null, "For boot scripts: apply client.conf's SWAP and THRESHOLD and the kernel's netswap=off; do nothing when they say no."),
            new("--config", "FILE", $"The client configuration (netswap-client.conf(5)). Default: {Attach.ClientConfig.DefaultPath}."),
            new("--timeout", "DURATION", "How long discovery waits for answers. Default: 2s."),
            new("--tls", null, "Also --tls=require, --tls=prefer, --tls=off. Swap over TLS 1.3 that the kernel encrypts (kernel TLS): STARTTLS, the handshake (the server's certificate must chain to the site CA; this machine's certificate is presented), NBD_OPT_GO, then the keys go into the socket and the socket to the kernel, with no process relaying the data (nbd-client is not used). A server whose certificate does not chain is skipped and the next one found is tried. Bare --tls is require: fail where the kernel has no kernel TLS; prefer: attach without TLS there, saying so. Default: client.conf's TLS, else off."),
            new("--tls-certificates", "DIR", $"The client's TLS credentials: ca-cert.pem, client-cert.pem and client-key.pem (netswap-make-certs's layout). Default: client.conf's TLS_CERTIFICATES, else {Tls.TlsCredentials.DefaultDirectory}."),
        ],
        Read);

    private static Func<Task<int>> Read(ArgumentReader reader)
    {
        var options = new Options(null, reader.Value("--device") ?? "auto", reader.OptionalSize("--size"), reader.Value("--token"), reader.Flag("--encrypt"),
            reader.OptionalInteger("--priority", -1, 32767, "a swap priority (-1 to 32767)"), reader.OneOf("--mode", "reconnect", "netlink", "persist"),
            reader.Duration("--reconnect-for", Attach.AttachRequest.DefaultReconnectFor), reader.Duration("--io-timeout", Attach.AttachRequest.DefaultIoTimeout),
            reader.Flag("--auto"), reader.Value("--config") ?? Attach.ClientConfig.DefaultPath, reader.Duration("--timeout", TimeSpan.FromSeconds(2)),
            reader.FlagOrValue("--tls", "require"), reader.Value("--tls-certificates"));
        if (options.Tls is not (null or "require" or "prefer" or "off"))
        {
            throw new UsageException($"option '--tls': '{options.Tls}' is not require, prefer or off");
        }
        if (options.Tls is "require" or "prefer" && options.Mode == "persist")
        {
            throw new UsageException("--tls works with --mode reconnect or netlink (the kernel takes the TLS socket by netlink), not persist");
        }
        reader.EnsureConsumed(maxPositional: 1);
        if (options.Device != "auto" && !options.Device.StartsWith("/dev/nbd", StringComparison.Ordinal))
        {
            throw new UsageException($"--device: '{options.Device}' is not /dev/nbdN or auto");
        }
        return () => RunAsync(options with { Server = reader.Positional.FirstOrDefault() });
    }

    private sealed record Options(string? Server, string Device, long? Size, string? Token, bool Encrypt, int? Priority, string Mode,
        TimeSpan ReconnectFor, TimeSpan IoTimeout, bool Auto, string ConfigPath, TimeSpan Timeout, string? Tls, string? TlsCertificates);

    internal static Attach.SwapAttacher Attacher() => new(new Attach.ProcessRunner(), new Attach.LinuxSwapSystem(), new Attach.SystemPaths(), Console.Error);

    private static async Task<int> RunAsync(Options options)
    {
        var commandLine = File.Exists("/proc/cmdline") ? await File.ReadAllTextAsync("/proc/cmdline") : null;
        var config = Attach.ClientConfig.Load(options.ConfigPath, commandLine);
        if (options.Auto)
        {
            if (config.Swap == Attach.SwapPolicy.No)
            {
                await Console.Out.WriteLineAsync($"netswap: swap disabled ({config.OffBecause})");
                return 0;
            }
            var memory = Attach.ClientConfig.MemTotal();
            if (config.Swap == Attach.SwapPolicy.Auto && memory >= config.Threshold)
            {
                await Console.Out.WriteLineAsync($"netswap: {memory >> 20} MiB of memory is not below THRESHOLD ({config.Threshold >> 20} MiB): no network swap needed");
                return 0;
            }
        }
        // Attached already (the initramfs did it, or an earlier run): say so, and leave it be.
        if (options.Device == "auto" && Attacher().ActiveAttachment() is { } active)
        {
            await Console.Out.WriteLineAsync($"netswap: swap already attached here: {active.Target} ({active.Size >> 20} MiB from {active.Server}, export {active.Export}); nothing to do");
            return 0;
        }
        var size = options.Size ?? config.Size;
        var token = options.Token ?? config.Token ?? MachineToken.Get();
        var tlsMode = options.Tls ?? config.Tls;
        var tls = tlsMode == "off" ? null : Tls.TlsCredentials.FromDirectory(options.TlsCertificates ?? config.TlsCertificates ?? Tls.TlsCredentials.DefaultDirectory);
        List<IPEndPoint> candidates;
        if ((options.Server ?? config.Server) is { } serverText)
        {
            // client.conf's PORT goes with client.conf's SERVER; a server on the command line has its own or 9572.
            candidates = [ServerAddress.Parse(serverText, options.Server is null ? config.Port ?? ServerAddress.DefaultPort : ServerAddress.DefaultPort)];
        }
        else
        {
            var found = await Discovery.ServerFinder.DiscoverAsync(options.Timeout, (ulong)(size ?? 0), token, DiscoveryProtocol.Port);
            var usable = found.Where(f => f.Admits && f.Reply.FreeCapacity >= (ulong)(size ?? 0)).ToList();
            if (usable.Count == 0)
            {
                throw new Attach.AttachException(found.Count == 0
                    ? $"no swap server answered discovery within {options.Timeout.TotalSeconds:0.#} s; give one: netswap attach SERVER"
                    : $"{found.Count} servers answered but none has room for {(size ?? 0) >> 20} MiB");
            }
            foreach (var best in usable)
            {
                await Console.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"netswap: found {best.Reply.ServerName} at {best.NbdEndpoint} ({best.Reply.FreeCapacity >> 20} MiB free, {best.RoundTrip.TotalMilliseconds:F1} ms)"));
            }
            // Best first; one whose NBD port cannot be reached, where the negotiation fails, or with TLS one the site's
            // CA does not vouch for (anyone on the LAN can answer discovery), is passed over for the next.
            candidates = [.. usable.Select(f => f.NbdEndpoint)];
        }
        var mode = options.Mode switch
        {
            "persist" => Attach.NbdClientMode.Persist,
            "netlink" => Attach.NbdClientMode.Netlink,
            _ => Attach.NbdClientMode.Reconnect,
        };
        var attached = await Attacher().AttachFirstTrustedAsync(candidates, server => new Attach.AttachRequest(server, options.Device, size, token, options.Encrypt || config.Encrypt, options.Priority ?? config.Priority, mode)
        {
            ReconnectFor = options.ReconnectFor,
            IoTimeout = options.IoTimeout,
            Tls = tls,
            TlsPreferred = tlsMode == "prefer",
        });
        await Console.Out.WriteLineAsync($"netswap: swap on {attached.Target} ({attached.Size >> 20} MiB from {attached.Server}, export {attached.Export}{(attached.Encrypted ? ", encrypted" : "")})");
        return 0;
    }
}
