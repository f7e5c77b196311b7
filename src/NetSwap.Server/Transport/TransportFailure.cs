using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace NetSwap.Server.Transport;

/// <summary>How a connection's socket failed: what its close is logged as, and whether anyone needs to look.</summary>
internal enum TransportFailureKind
{
    /// <summary>Something else: the socket destroyed by an administrator (ss -K), an unreachable host, a bug.</summary>
    Other,
    /// <summary>The peer reset the connection or closed it while we were writing: a client that went away abruptly.</summary>
    Reset,
    /// <summary>TCP gave up on the peer (keepalive or retransmission timeout): a pulled cable, a client without power.</summary>
    TimedOut,
}

/// <summary>A failed socket call, classified once where the errno is known.</summary>
internal sealed class TransportException(string message, TransportFailureKind kind) : IOException(message)
{
    public TransportFailureKind Kind { get; } = kind;

    private const int EPIPE = 32;
    private const int ECONNRESET = 104;
    private const int ETIMEDOUT = 110;

    public static TransportException FromErrno(string call, int errno) =>
        new($"{call} failed: {Marshal.GetPInvokeErrorMessage(errno)}", KindOf(errno));

    public static TransportFailureKind KindOf(int errno) => errno switch
    {
        ECONNRESET or EPIPE => TransportFailureKind.Reset,
        ETIMEDOUT => TransportFailureKind.TimedOut,
        _ => TransportFailureKind.Other,
    };

    /// <summary>Socket resets, closed streams and cancellations after the connection's abort are its normal ends, not failures.</summary>
    public static bool IsConnectionEnd(Exception e, CancellationToken abort) => e switch
    {
        IOException or SocketException or ObjectDisposedException => true,
        OperationCanceledException => abort.IsCancellationRequested,
        _ => false,
    };

    /// <summary>The close reason of a connection whose socket failed, by its kind.</summary>
    public static string CloseReason(Exception e) => Classify(e) switch
    {
        TransportFailureKind.Reset => "connection reset by the client",
        TransportFailureKind.TimedOut => "connection timed out (the client stopped answering)",
        _ => "connection lost",
    };

    /// <summary>
    /// The kind of any exception a connection's streams throw: ours, or .NET's own (NetworkStream's SocketException
    /// inside an IOException, SslStream's IOException around either), looked for down the chain of inner exceptions.
    /// </summary>
    public static TransportFailureKind Classify(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
        {
            switch (e)
            {
                case TransportException transport:
                    return transport.Kind;
                case SocketException socket:
                    return socket.SocketErrorCode switch
                    {
                        SocketError.ConnectionReset or SocketError.Shutdown => TransportFailureKind.Reset,
                        SocketError.TimedOut => TransportFailureKind.TimedOut,
                        _ => TransportFailureKind.Other,
                    };
            }
        }
        return TransportFailureKind.Other;
    }
}
