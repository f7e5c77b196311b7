using System.Net;
using System.Net.Sockets;

namespace NetSwap.Client.Kernel;

/// <summary>
/// A TCP connection made with plain system calls, meant to be handed to the kernel's nbd driver: blocking, with send
/// and receive time-outs while netswap speaks on it, and without them once the kernel owns it (the driver would take a
/// receive time-out for a dead connection).
/// </summary>
internal sealed unsafe class KernelSocket : BlockingStream
{
    private int _fd;

    private KernelSocket(int fd) => _fd = fd;

    public int Descriptor => _fd;

    /// <summary>Connects within <paramref name="timeout"/> (connect(2) honours the send time-out).</summary>
    public static KernelSocket Connect(IPEndPoint server, TimeSpan timeout)
    {
        var fd = Libc.Socket(server.AddressFamily == AddressFamily.InterNetworkV6 ? Libc.AF_INET6 : Libc.AF_INET, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0);
        if (fd < 0)
        {
            throw new SocketException(Libc.LastError);
        }
        var socket = new KernelSocket(fd);
        try
        {
            Libc.SetTimeouts(fd, timeout);
            Libc.SetInt(fd, Libc.IPPROTO_TCP, Libc.TCP_NODELAY, 1);
            Libc.SetInt(fd, Libc.SOL_SOCKET, Libc.SO_KEEPALIVE, 1);
            // .NET's SocketAddress holds the native struct sockaddr_in / sockaddr_in6 on Linux.
            var address = server.Serialize();
            fixed (byte* native = address.Buffer.Span)
            {
                if (Libc.Connect(fd, native, address.Size) != 0)
                {
                    throw new SocketException(Libc.LastError);
                }
            }
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Clears the time-outs: from here on the kernel owns the connection's pace.</summary>
    public void PrepareForKernel() => Libc.SetTimeouts(_fd, TimeSpan.Zero);

    public override int Read(Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            while (true)
            {
                var n = Libc.Recv(_fd, p, buffer.Length, 0);
                if (n >= 0)
                {
                    return (int)n;
                }
                var errno = Libc.LastError;
                if (errno != Libc.EINTR)
                {
                    throw new IOException(errno == Libc.EAGAIN ? "the server did not answer in time" : Libc.Describe(errno));
                }
            }
        }
    }

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            var sent = 0;
            while (sent < buffer.Length)
            {
                var n = Libc.Send(_fd, p + sent, buffer.Length - sent, Libc.MSG_NOSIGNAL);
                if (n < 0)
                {
                    var errno = Libc.LastError;
                    if (errno == Libc.EINTR)
                    {
                        continue;
                    }
                    throw new IOException(errno == Libc.EAGAIN ? "the server did not take data in time" : Libc.Describe(errno));
                }
                sent += (int)n;
            }
        }
    }

    protected override void Dispose(bool disposing)
    {
        var fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0)
        {
            // Only this descriptor goes: once the kernel holds the socket it stays open for the kernel.
            Libc.Close(fd);
        }
        base.Dispose(disposing);
    }
}
