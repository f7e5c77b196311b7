using System.Runtime.InteropServices;

namespace NetSwap.Server.Transport;

/// <summary>
/// The Linux socket and epoll calls the <see cref="EventLoop"/> and <see cref="ReactorStream"/> make directly: .NET's own
/// socket engine hands every completion to the thread pool, which is what these two exist to avoid. A SafeHandle
/// argument is reference-counted for the length of the call, so a descriptor cannot be closed (and its number reused by
/// another client) under a call in progress.
/// </summary>
internal static unsafe partial class SocketCalls
{
    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int ENOENT = 2;

    public const int MsgPeek = 0x02;
    public const int MsgDontWait = 0x40;
    public const int MsgNoSignal = 0x4000;
    public const int MsgMore = 0x8000;

    public const uint EpollIn = 0x001;
    public const uint EpollOut = 0x004;
    public const uint EpollErr = 0x008;
    public const uint EpollHup = 0x010;
    public const uint EpollRdHup = 0x2000;
    public const uint EpollEt = 1u << 31;

    public const int EpollCtlAdd = 1;
    public const int EpollCtlDel = 2;
    private const int EpollCloexec = 0x80000;

    public const short PollIn = 0x001;
    public const short PollOut = 0x004;

    /// <summary>struct epoll_event as x86-64 lays it out: packed, 12 bytes (other architectures pad it to 16).</summary>
    [StructLayout(LayoutKind.Sequential, Pack = 4)]
    public struct EpollEvent
    {
        public uint Events;
        public ulong Data;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short REvents;
    }

    /// <summary>Only where epoll_event has the layout above: x86-64 (the architecture this project builds for).</summary>
    public static bool Supported => RuntimeInformation.IsOSPlatform(OSPlatform.Linux)
        && RuntimeInformation.ProcessArchitecture == Architecture.X64;

    [LibraryImport("libc", EntryPoint = "epoll_create1", SetLastError = true)]
    private static partial int EpollCreate1(int flags);

    public static int EpollCreate() => EpollCreate1(EpollCloexec);

    [LibraryImport("libc", EntryPoint = "epoll_ctl", SetLastError = true)]
    public static partial int EpollCtl(int epfd, int op, SafeHandle fd, EpollEvent* ev);

    [LibraryImport("libc", EntryPoint = "epoll_wait", SetLastError = true)]
    public static partial int EpollWait(int epfd, EpollEvent* events, int maxEvents, int timeout);

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    public static partial nint Recv(SafeHandle fd, byte* buffer, nuint length, int flags);

    [LibraryImport("libc", EntryPoint = "send", SetLastError = true)]
    public static partial nint Send(SafeHandle fd, byte* buffer, nuint length, int flags);

    [LibraryImport("libc", EntryPoint = "sendmsg", SetLastError = true)]
    public static partial nint SendMsg(SafeHandle fd, MsgHdr* message, int flags);

    [LibraryImport("libc", EntryPoint = "splice", SetLastError = true)]
    private static partial nint Splice(SafeHandle input, long* inputOffset, SafeHandle output, long* outputOffset, nuint length, uint flags);

    private const uint SpliceMove = 1;
    private const uint SpliceNonBlock = 2;

    /// <summary>splice(2) from a socket into a pipe, never waiting: bytes moved, 0 at end of stream, -1 with errno.</summary>
    public static nint Splice(SafeHandle socket, SafeHandle pipe, nuint count) => Splice(socket, null, pipe, null, count, SpliceMove | SpliceNonBlock);

    [LibraryImport("libc", EntryPoint = "sendfile64", SetLastError = true)]
    public static partial nint SendFile(SafeHandle socket, SafeHandle file, long* offset, nuint count);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll(PollFd* fds, nuint count, int timeout);

    [LibraryImport("libc", EntryPoint = "close")]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    private static partial int GetSockOpt(SafeHandle fd, int level, int name, byte* value, uint* length);

    private const int IpProtoTcp = 6;
    private const int TcpInfo = 11;
    // struct tcp_info: tcpi_bytes_acked is the u64 at offset 120 (Linux 4.1 and later; a shorter answer lacks it).
    private const int BytesAckedOffset = 120;
    private const int TcpInfoSize = 232;

    /// <summary>tcpi_bytes_acked of a TCP socket, or -1 (not TCP, or a kernel too old to say).</summary>
    public static long TcpBytesAcked(SafeHandle socket)
    {
        var info = stackalloc byte[TcpInfoSize];
        var length = (uint)TcpInfoSize;
        if (GetSockOpt(socket, IpProtoTcp, TcpInfo, info, &length) != 0 || length < BytesAckedOffset + sizeof(ulong))
        {
            return -1;
        }
        return (long)*(ulong*)(info + BytesAckedOffset);
    }

    private const int EfdNonBlock = 0x800;
    private const int EfdCloexec = 0x80000;

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFd(uint initial, int flags);

    /// <summary>A non-blocking eventfd: how another thread wakes an event loop asleep in epoll_wait.</summary>
    public static int CreateEventFd() => EventFd(0, EfdNonBlock | EfdCloexec);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, void* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, void* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "epoll_ctl", SetLastError = true)]
    public static partial int EpollCtl(int epfd, int op, int fd, EpollEvent* ev);

    /// <summary>Blocks until the descriptor is ready for <paramref name="events"/> (the synchronous Stream methods only).</summary>
    public static void WaitReady(SafeHandle handle, short events)
    {
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            var fd = new PollFd { Fd = (int)handle.DangerousGetHandle(), Events = events };
            while (Poll(&fd, 1, -1) < 0 && Marshal.GetLastPInvokeError() == EINTR)
            {
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }
}
