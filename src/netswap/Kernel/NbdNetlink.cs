namespace NetSwap.Client.Kernel;

/// <summary>A failure of the kernel's nbd netlink interface, with the errno it gave.</summary>
internal sealed class NetlinkException(string message) : Exception(message);

/// <summary>
/// The kernel's nbd driver over generic netlink: reconfigure a device (time-outs, a new socket for a dead one) and
/// hear its NBD_CMD_LINK_DEAD events. Two sockets, so that acknowledgements and events never interleave.
/// </summary>
internal sealed unsafe class NbdNetlink : IDisposable
{
    private readonly int _requests;
    private readonly int _events;
    private readonly ushort _family;
    private uint _sequence;

    private NbdNetlink(int requests, int events, ushort family)
    {
        _requests = requests;
        _events = events;
        _family = family;
    }

    /// <summary>The driver's index of a device path: /dev/nbd3 is 3; false for anything that is not /dev/nbdN.</summary>
    public static bool TryParseIndex(string device, out uint index)
    {
        var name = Path.GetFileName(device);
        index = 0;
        return name.StartsWith("nbd", StringComparison.Ordinal)
            && uint.TryParse(name.AsSpan(3), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out index);
    }

    /// <summary>Finds the "nbd" family and joins its multicast group; fails when the nbd module is not loaded.</summary>
    public static NbdNetlink Open()
    {
        var requests = OpenSocket();
        var events = -1;
        try
        {
            var (family, group) = LookUp(requests, NetlinkMessages.NbdFamilyName, NetlinkMessages.NbdMulticastGroup);
            if (group == 0)
            {
                throw new NetlinkException("the kernel's nbd netlink family has no multicast group: it cannot report dead connections");
            }
            events = OpenSocket();
            var id = group;
            if (Libc.SetSockOpt(events, Libc.SOL_NETLINK, Libc.NETLINK_ADD_MEMBERSHIP, &id, 4) != 0)
            {
                throw new NetlinkException($"joining the nbd multicast group: {Libc.Describe(Libc.LastError)}");
            }
            return new NbdNetlink(requests, events, family);
        }
        catch
        {
            Libc.Close(requests);
            if (events >= 0)
            {
                Libc.Close(events);
            }
            throw;
        }
    }

    /// <summary>A generic netlink family's id and the id of one of its multicast groups (0 when it has no such group).</summary>
    public static (ushort Family, uint Group) LookUp(string name, string group)
    {
        var fd = OpenSocket();
        try
        {
            return LookUp(fd, name, group);
        }
        finally
        {
            Libc.Close(fd);
        }
    }

    private static (ushort Family, uint Group) LookUp(int fd, string name, string group)
    {
        var buffer = new byte[8192];
        var length = NetlinkMessages.GetFamily(buffer, 1, name);
        SendAll(fd, buffer.AsSpan(0, length));
        var deadline = Environment.TickCount64 + 5000;
        while (Environment.TickCount64 < deadline)
        {
            var received = Receive(fd, buffer, 1000);
            foreach (var (header, offset) in NetlinkMessages.Split(buffer.AsSpan(0, received)))
            {
                var message = buffer.AsSpan(offset, (int)header.Length);
                if (header.Type == NetlinkMessages.NlmsgError)
                {
                    var errno = NetlinkMessages.ReadError(message);
                    throw new NetlinkException(errno == 2
                        ? $"the kernel has no '{name}' netlink family{(name == NetlinkMessages.NbdFamilyName ? ": is the nbd module loaded?" : "")}"
                        : $"looking up the '{name}' netlink family: {Libc.Describe(errno)}");
                }
                if (header.Type == NetlinkMessages.GenlIdCtrl && NetlinkMessages.TryReadFamily(message, group, out var family, out var groupId))
                {
                    return (family, groupId);
                }
            }
        }
        throw new NetlinkException($"the kernel did not answer the look-up of the '{name}' netlink family");
    }

    private static int OpenSocket()
    {
        var fd = Libc.Socket(Libc.AF_NETLINK, Libc.SOCK_RAW | Libc.SOCK_CLOEXEC, Libc.NETLINK_GENERIC);
        if (fd < 0)
        {
            throw new NetlinkException($"cannot open a netlink socket: {Libc.Describe(Libc.LastError)}");
        }
        var address = stackalloc byte[12];
        new Span<byte>(address, 12).Clear();
        address[0] = Libc.AF_NETLINK;
        if (Libc.Bind(fd, address, 12) != 0)
        {
            var errno = Libc.LastError;
            Libc.Close(fd);
            throw new NetlinkException($"cannot bind a netlink socket: {Libc.Describe(errno)}");
        }
        return fd;
    }

    private static void SendAll(int fd, ReadOnlySpan<byte> message)
    {
        fixed (byte* p = message)
        {
            if (Libc.Send(fd, p, message.Length, 0) != message.Length)
            {
                throw new NetlinkException($"sending to the kernel: {Libc.Describe(Libc.LastError)}");
            }
        }
    }

    /// <summary>One datagram, or 0 when nothing came within the time-out.</summary>
    private static int Receive(int fd, byte[] buffer, int timeoutMilliseconds)
    {
        var poll = new Libc.PollFd { Fd = fd, Events = Libc.POLLIN };
        var ready = Libc.Poll(&poll, 1, timeoutMilliseconds);
        if (ready < 0)
        {
            var errno = Libc.LastError;
            if (errno == Libc.EINTR)
            {
                return 0;
            }
            throw new NetlinkException($"waiting for the kernel: {Libc.Describe(errno)}");
        }
        if (ready == 0)
        {
            return 0;
        }
        fixed (byte* p = buffer)
        {
            var n = Libc.Recv(fd, p, buffer.Length, 0);
            if (n < 0)
            {
                throw new NetlinkException($"reading from the kernel: {Libc.Describe(Libc.LastError)}");
            }
            return (int)n;
        }
    }

    /// <summary>NBD_CMD_RECONFIGURE of /dev/nbd<paramref name="index"/>; throws with the kernel's errno when refused.</summary>
    public void Reconfigure(uint index, ulong? deadConnectionSeconds = null, int? socket = null)
    {
        var buffer = new byte[256];
        var sequence = ++_sequence;
        var length = NetlinkMessages.Reconfigure(buffer, _family, sequence, index, deadConnectionSeconds, timeoutSeconds: null, socket);
        Request(buffer.AsSpan(0, length), sequence, $"reconfigure nbd{index}");
    }

    /// <summary>
    /// NBD_CMD_CONNECT of /dev/nbd<paramref name="index"/> over <paramref name="socket"/>, which the kernel keeps
    /// (this process may close its own descriptor afterwards); throws with the kernel's errno when refused.
    /// </summary>
    public void Connect(uint index, int socket, ulong sizeBytes, ulong serverFlags, TimeSpan ioTimeout, TimeSpan? deadConnection)
    {
        var buffer = new byte[256];
        var sequence = ++_sequence;
        var length = NetlinkMessages.Connect(buffer, _family, sequence, index, sizeBytes, blockSize: 4096, serverFlags,
            deadConnection is { } dead ? (ulong)Math.Ceiling(dead.TotalSeconds) : null, (ulong)Math.Max(1, Math.Ceiling(ioTimeout.TotalSeconds)), socket);
        Request(buffer.AsSpan(0, length), sequence, $"connect nbd{index}");
    }

    private void Request(ReadOnlySpan<byte> message, uint sequence, string what)
    {
        SendAll(_requests, message);
        var answer = new byte[8192];
        var deadline = Environment.TickCount64 + 5000;
        while (Environment.TickCount64 < deadline)
        {
            var received = Receive(_requests, answer, 1000);
            foreach (var (header, offset) in NetlinkMessages.Split(answer.AsSpan(0, received)))
            {
                if (header.Type == NetlinkMessages.NlmsgError && header.Sequence == sequence)
                {
                    var errno = NetlinkMessages.ReadError(answer.AsSpan(offset, (int)header.Length));
                    if (errno != 0)
                    {
                        throw new NetlinkException($"the kernel refused to {what}: {Libc.Describe(errno)}");
                    }
                    return;
                }
            }
        }
        throw new NetlinkException($"the kernel did not answer the request to {what}");
    }

    /// <summary>Waits up to <paramref name="timeout"/> for a dead-link event; the device index, or null when none came.</summary>
    public uint? WaitForLinkDead(TimeSpan timeout)
    {
        var buffer = new byte[8192];
        var received = Receive(_events, buffer, (int)timeout.TotalMilliseconds);
        foreach (var (header, offset) in NetlinkMessages.Split(buffer.AsSpan(0, received)))
        {
            if (NetlinkMessages.LinkDeadIndex(buffer.AsSpan(offset, (int)header.Length), _family) is { } index)
            {
                return index;
            }
        }
        return null;
    }

    public void Dispose()
    {
        Libc.Close(_requests);
        Libc.Close(_events);
    }
}
