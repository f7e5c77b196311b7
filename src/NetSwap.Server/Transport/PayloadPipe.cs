using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace NetSwap.Server.Transport;

/// <summary>
/// A pipe that carries one WRITE's payload from the socket to the export's file inside the kernel (splice(2) in, splice
/// out), so a write waiting for its turn holds no buffer of the server's and its data is copied once, not twice. Its
/// capacity is set to the payload's reserved size; <see cref="Held"/> counts the bytes in it. Both ends are
/// non-blocking. One user at a time.
/// </summary>
internal sealed partial class PayloadPipe : IDisposable
{
    private const int OCloexec = 0x80000;
    private const int ONonBlock = 0x800;
    private const int FSetPipeSize = 1031;

    [LibraryImport("libc", EntryPoint = "pipe2", SetLastError = true)]
    private static unsafe partial int Pipe2(int* fds, int flags);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(SafeHandle fd, int command, int argument);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static unsafe partial nint Read(SafeHandle fd, byte* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static unsafe partial nint Write(SafeHandle fd, byte* buffer, nuint count);

    private PayloadPipe(SafeFileHandle readEnd, SafeFileHandle writeEnd, int capacity)
    {
        ReadEnd = readEnd;
        WriteEnd = writeEnd;
        Capacity = capacity;
    }

    public SafeFileHandle ReadEnd { get; }
    public SafeFileHandle WriteEnd { get; }
    public int Capacity { get; }

    /// <summary>Bytes in the pipe now.</summary>
    public int Held { get; set; }

    /// <summary>
    /// A pipe of <paramref name="capacity"/> bytes, or null with the errno when none can be had: out of descriptors, or
    /// an unprivileged user past pipe-user-pages-soft (then F_SETPIPE_SZ is refused).
    /// </summary>
    public static unsafe PayloadPipe? TryCreate(int capacity, out int errno)
    {
        var fds = stackalloc int[2];
        if (Pipe2(fds, OCloexec | ONonBlock) != 0)
        {
            errno = Marshal.GetLastPInvokeError();
            return null;
        }
        var pipe = new PayloadPipe(new SafeFileHandle(fds[0], ownsHandle: true), new SafeFileHandle(fds[1], ownsHandle: true), capacity);
        if (Fcntl(pipe.WriteEnd, FSetPipeSize, capacity) < capacity)
        {
            errno = Marshal.GetLastPInvokeError();
            pipe.Dispose();
            return null;
        }
        errno = 0;
        return pipe;
    }

    /// <summary>Appends what of <paramref name="data"/> the pipe takes now; how much (less than all: it is full).</summary>
    public unsafe int Append(ReadOnlySpan<byte> data)
    {
        fixed (byte* start = data)
        {
            var done = 0;
            while (done < data.Length)
            {
                var n = Write(WriteEnd, start + done, (nuint)(data.Length - done));
                if (n < 0)
                {
                    if (Marshal.GetLastPInvokeError() == SocketCalls.EINTR)
                    {
                        continue;
                    }
                    break;
                }
                done += (int)n;
            }
            Held += done;
            return done;
        }
    }

    /// <summary>Takes everything the pipe holds into <paramref name="destination"/> (at least <see cref="Held"/> long).</summary>
    public unsafe void DrainInto(Span<byte> destination)
    {
        fixed (byte* start = destination)
        {
            var done = 0;
            while (done < Held)
            {
                var n = Read(ReadEnd, start + done, (nuint)(Held - done));
                if (n <= 0)
                {
                    var errno = n < 0 ? Marshal.GetLastPInvokeError() : 0;
                    if (errno == SocketCalls.EINTR)
                    {
                        continue;
                    }
                    throw new IOException($"a payload pipe gave back {done} of its {Held} bytes (errno {errno})");
                }
                done += (int)n;
            }
            Held = 0;
        }
    }

    public void Dispose()
    {
        ReadEnd.Dispose();
        WriteEnd.Dispose();
    }
}
