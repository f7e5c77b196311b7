using System.Diagnostics;
using System.Globalization;
using System.Net;
using NetSwap.Client.Kernel;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Client.Attach;

/// <summary>What the keeper needs of the kernel: its dead-link events, the hand-over of a new socket, and whether the
/// device is still connected at all. The real one is netlink; tests drive the keeper through their own.</summary>
internal interface IKernelLink
{
    /// <summary>The index of a device whose connection died, or null when none did within the time-out.</summary>
    uint? WaitForLinkDead(TimeSpan timeout);

    /// <summary>Gives the kernel the connected socket in place of the dead one.</summary>
    void HandOver(uint index, int socket);

    /// <summary>False once the device has been disconnected (detached): the keeper's work is over.</summary>
    bool DeviceConnected(uint index);
}

internal sealed class NetlinkKernelLink(NbdNetlink netlink, string sysBlock) : IKernelLink
{
    public uint? WaitForLinkDead(TimeSpan timeout) => netlink.WaitForLinkDead(timeout);

    public void HandOver(uint index, int socket) => netlink.Reconfigure(index, socket: socket);

    public bool DeviceConnected(uint index) => File.Exists(Path.Combine(sysBlock, $"nbd{index}", "pid"));
}

/// <summary>The swap export a keeper looks after, as it was when attached.
/// With <see cref="Tls"/> every new connection runs the TLS handshake again and is handed over as kernel TLS.</summary>
internal sealed record KeptExport(uint Index, IPEndPoint Server, string Export, ulong Size, NbdTransmissionFlags Flags, byte[] FirstBlock, Tls.TlsClientContext? Tls = null);

/// <summary>The area behind the export is not the one the kernel swapped to: handing it over would corrupt memory.</summary>
internal sealed class AreaLostException(string message) : Exception(message);

/// <summary>
/// `netswap keep`: stays resident next to an attached swap device (netlink mode) and, when the kernel reports its
/// connection dead, opens the same swap export again with the same token and hands the new socket to the kernel
/// (NBD_CMD_RECONFIGURE). Meanwhile the kernel holds the requests back (the dead-connection time-out); they go out
/// again on the new connection, so nothing swapped is lost. Before the hand-over it checks that the server gave back
/// the same area: the same size and flags, and the same first block (the swap header, which the kernel never
/// rewrites). A fresh area — the server's grace period ran out, or it restarted — is refused, loudly: better a failed
/// swap device than pages read back as zeros.
/// </summary>
internal sealed class ReconnectKeeper(KeptExport export, IKernelLink kernel, Action<int, string> log)
{
    /// <summary>How long to keep trying after a connection died (matches the kernel's dead-connection time-out).</summary>
    public TimeSpan ReconnectFor { get; init; } = AttachRequest.DefaultReconnectFor;
    public TimeSpan RetryInterval { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>How often, with no event, the keeper looks whether the device is still connected.</summary>
    public TimeSpan CheckInterval { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>The keeper's own memory, for the log line of a reconnect (what reconnecting cost it); none when null.</summary>
    public Func<string>? Memory { get; init; }

    public const int Error = 3;
    public const int Warning = 4;
    public const int Notice = 5;
    public const int Info = 6;

    public int Reconnects { get; private set; }

    /// <summary>Runs until the device is disconnected or the token is cancelled; 0, or 1 when an area was lost.</summary>
    public int Run(CancellationToken cancellationToken)
    {
        var lost = false;
        while (!cancellationToken.IsCancellationRequested)
        {
            var dead = kernel.WaitForLinkDead(CheckInterval);
            if (dead is null)
            {
                if (!kernel.DeviceConnected(export.Index))
                {
                    log(Info, $"nbd{export.Index} is no longer connected; nothing left to keep");
                    return lost ? 1 : 0;
                }
                continue;
            }
            if (dead != export.Index)
            {
                continue;
            }
            lost |= !Reconnect(cancellationToken);
        }
        return lost ? 1 : 0;
    }

    /// <summary>One dead connection: tries until it is replaced, the area turns out lost, or time runs out.</summary>
    public bool Reconnect(CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        log(Warning, $"nbd{export.Index}: connection to {export.Server} lost; reconnecting to '{export.Export}' for up to {ReconnectFor.TotalSeconds:0} s");
        var attempt = 0;
        string? lastFailure = null;
        while (clock.Elapsed < ReconnectFor && !cancellationToken.IsCancellationRequested)
        {
            attempt++;
            try
            {
                using var connection = KernelBoundConnection.OpenAsync(export.Server, export.Tls, ConnectTimeout, cancellationToken).GetAwaiter().GetResult();
                Verify(connection.Probe, cancellationToken);
                connection.PrepareForKernel();
                kernel.HandOver(export.Index, connection.Socket.Descriptor);
                Reconnects++;
                log(Notice, string.Create(CultureInfo.InvariantCulture,
                    $"nbd{export.Index}: reconnected to {export.Server} ({connection.Security}) after {clock.Elapsed.TotalSeconds:0.0} s ({attempt} attempt{(attempt == 1 ? "" : "s")}); the same swap area, requests resumed{(Memory is null ? "" : "; " + Memory())}"));
                return true;
            }
            catch (AreaLostException e)
            {
                log(Error, $"nbd{export.Index}: {e.Message}; not handing it to the kernel: swap on this device will fail");
                return false;
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or NbdProtocolException or NetlinkException or EndOfStreamException)
            {
                if (e.Message != lastFailure)
                {
                    log(Info, $"nbd{export.Index}: reconnect attempt {attempt} failed: {e.Message}");
                    lastFailure = e.Message;
                }
            }
            cancellationToken.WaitHandle.WaitOne(RetryInterval);
        }
        log(Error, $"nbd{export.Index}: could not reconnect to {export.Server} within {ReconnectFor.TotalSeconds:0} s ({attempt} attempts; last: {lastFailure}); swap on this device will fail");
        return false;
    }

    /// <summary>The handshake again, and the proof that the area is the one the kernel knows.</summary>
    private void Verify(NbdProbe probe, CancellationToken cancellationToken)
    {
        var (size, flags) = probe.GoAsync(export.Export, cancellationToken).GetAwaiter().GetResult();
        if (size != export.Size || flags != export.Flags)
        {
            probe.DisconnectAsync(cancellationToken).GetAwaiter().GetResult();
            throw new AreaLostException($"the server offers '{export.Export}' with size {size} and flags {flags}, not {export.Size} and {export.Flags}: it is another area");
        }
        var block = new byte[export.FirstBlock.Length];
        probe.ReadAsync(0, block, cancellationToken).GetAwaiter().GetResult();
        if (!block.AsSpan().SequenceEqual(export.FirstBlock))
        {
            // A clean goodbye: the server destroys the fresh area at once instead of keeping it for a grace period.
            probe.DisconnectAsync(cancellationToken).GetAwaiter().GetResult();
            throw new AreaLostException($"the server's '{export.Export}' starts with another swap header: the area was destroyed (grace period over, or the server restarted)");
        }
    }
}
