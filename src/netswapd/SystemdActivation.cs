using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace NetSwap.Daemon;

/// <summary>
/// systemd socket activation (sd_listen_fds(3)): descriptors 3 … 3+LISTEN_FDS-1, meant for us when LISTEN_PID is our
/// pid. The variables are removed after use so child processes do not take them for theirs.
/// </summary>
internal static partial class SystemdActivation
{
    private const int FirstDescriptor = 3;
    private const int SolSocket = 1;
    private const int SoAcceptConn = 30;

    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    private static partial int GetSockOpt(int fd, int level, int option, out int value, ref int length);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(int fd, int command, int argument);

    /// <summary>
    /// The passed sockets: listening ones to accept on, connected ones (Accept=yes) to serve directly, and datagram
    /// ones (ListenDatagram=, the discovery port) to answer probes on. They are told apart by type, so the unit
    /// needs no FileDescriptorName=.
    /// </summary>
    public static (List<Socket> Listening, List<Socket> Connected, List<Socket> Datagram) TakeSockets()
    {
        var listening = new List<Socket>();
        var connected = new List<Socket>();
        var datagram = new List<Socket>();
        var pid = Environment.GetEnvironmentVariable("LISTEN_PID");
        var fds = Environment.GetEnvironmentVariable("LISTEN_FDS");
        Environment.SetEnvironmentVariable("LISTEN_PID", null);
        Environment.SetEnvironmentVariable("LISTEN_FDS", null);
        Environment.SetEnvironmentVariable("LISTEN_FDNAMES", null);
        if (pid is null || fds is null || pid != Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture)
            || !int.TryParse(fds, System.Globalization.CultureInfo.InvariantCulture, out var count) || count <= 0)
        {
            return (listening, connected, datagram);
        }
        for (var fd = FirstDescriptor; fd < FirstDescriptor + count; fd++)
        {
            // FD_CLOEXEC (F_SETFD = 2): these are ours alone.
            _ = Fcntl(fd, 2, 1);
            var socket = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
            var length = sizeof(int);
            if (socket.SocketType == SocketType.Dgram)
            {
                datagram.Add(socket);
            }
            else if (GetSockOpt(fd, SolSocket, SoAcceptConn, out var accepting, ref length) == 0 && accepting != 0)
            {
                listening.Add(socket);
            }
            else
            {
                connected.Add(socket);
            }
        }
        return (listening, connected, datagram);
    }

    public static bool IsListening(int fd)
    {
        var length = sizeof(int);
        return GetSockOpt(fd, SolSocket, SoAcceptConn, out var accepting, ref length) == 0 && accepting != 0;
    }

    public static bool IsSocket(int fd)
    {
        var length = sizeof(int);
        return GetSockOpt(fd, SolSocket, 3 /* SO_TYPE */, out _, ref length) == 0;
    }

    /// <summary>
    /// The first of the directories systemd names in RUNTIME_DIRECTORY, STATE_DIRECTORY or CREDENTIALS_DIRECTORY
    /// (colon-separated when the unit lists several), when it is set to an absolute path.
    /// </summary>
    public static string? Directory(string variable) =>
        Environment.GetEnvironmentVariable(variable)?.Split(':')[0] is { Length: > 0 } first && Path.IsPathRooted(first) ? first : null;
}
