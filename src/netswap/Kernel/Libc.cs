using System.Runtime.InteropServices;

namespace NetSwap.Client.Kernel;

/// <summary>
/// The system calls the reconnect keeper needs, straight from libc: a socket that is handed to the kernel must never
/// have been registered with .NET's socket engine, and netlink has no .NET type at all.
/// </summary>
internal static unsafe partial class Libc
{
    public const int AF_INET = 2;
    public const int AF_INET6 = 10;
    public const int AF_NETLINK = 16;
    public const int SOCK_STREAM = 1;
    public const int SOCK_RAW = 3;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int NETLINK_GENERIC = 16;
    public const int SOL_SOCKET = 1;
    public const int SO_KEEPALIVE = 9;
    public const int SO_RCVTIMEO = 20;
    public const int SO_SNDTIMEO = 21;
    public const int IPPROTO_TCP = 6;
    public const int TCP_NODELAY = 1;
    public const int SOL_NETLINK = 270;
    public const int NETLINK_ADD_MEMBERSHIP = 1;
    public const int MSG_NOSIGNAL = 0x4000;
    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    public const int O_CLOEXEC = 0x80000;
    public const int O_DIRECT = 0x4000;
    public const short POLLIN = 1;
    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int MCL_CURRENT = 1;
    public const int MCL_FUTURE = 2;
    public const int MCL_ONFAULT = 4;
    public const int PR_SET_IO_FLUSHER = 57;
    public const int M_TRIM_THRESHOLD = -1;
    public const int M_MMAP_THRESHOLD = -3;
    public const int SCHED_FIFO = 1;
    public const int SCHED_RESET_ON_FORK = 0x40000000;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    public static partial int Socket(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "bind", SetLastError = true)]
    public static partial int Bind(int fd, byte* address, int length);

    [LibraryImport("libc", EntryPoint = "connect", SetLastError = true)]
    public static partial int Connect(int fd, byte* address, int length);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    public static partial int SetSockOpt(int fd, int level, int name, void* value, int length);

    [LibraryImport("libc", EntryPoint = "send", SetLastError = true)]
    public static partial nint Send(int fd, byte* buffer, nint length, int flags);

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    public static partial nint Recv(int fd, byte* buffer, nint length, int flags);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    public static partial int Poll(PollFd* fds, nuint count, int timeoutMilliseconds);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "pread64", SetLastError = true)]
    public static partial nint PRead(int fd, byte* buffer, nint length, long offset);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, byte* buffer, nint length);

    [LibraryImport("libc", EntryPoint = "dup2", SetLastError = true)]
    public static partial int Dup2(int from, int to);

    [LibraryImport("libc", EntryPoint = "setsid", SetLastError = true)]
    public static partial int SetSid();

    [LibraryImport("libc", EntryPoint = "mallopt")]
    public static partial int MallOpt(int parameter, int value);

    [LibraryImport("libc", EntryPoint = "mlockall", SetLastError = true)]
    public static partial int MLockAll(int flags);

    [LibraryImport("libc", EntryPoint = "prctl", SetLastError = true)]
    public static partial int Prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    /// <summary>sched_setscheduler(2); pid 0 is the calling thread (Linux schedules threads, not processes).</summary>
    [LibraryImport("libc", EntryPoint = "sched_setscheduler", SetLastError = true)]
    public static partial int SchedSetScheduler(int pid, int policy, int* priority);

    public static int LastError => Marshal.GetLastPInvokeError();

    public static string Describe(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    public static void SetTimeouts(int fd, TimeSpan timeout)
    {
        var value = stackalloc long[2];
        value[0] = (long)timeout.TotalSeconds;
        value[1] = timeout.Milliseconds * 1000L;
        SetSockOpt(fd, SOL_SOCKET, SO_RCVTIMEO, value, 16);
        SetSockOpt(fd, SOL_SOCKET, SO_SNDTIMEO, value, 16);
    }

    public static void SetInt(int fd, int level, int name, int value) => SetSockOpt(fd, level, name, &value, sizeof(int));
}
