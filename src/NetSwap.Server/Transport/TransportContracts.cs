using System.Runtime.InteropServices;

namespace NetSwap.Server.Transport;

/// <summary>
/// What a connection's request loop may know of the thread that serves it: an event loop's, shared with other clients,
/// on which nothing may block. Implemented by the socket; the request loop never sees the socket's type.
/// </summary>
internal interface ILoopAffinity
{
    /// <summary>Whether the caller runs on the event loop that serves this connection.</summary>
    bool IsOnLoop { get; }

    /// <summary>How many times the connection has waited for its socket so far: unchanged over a turn, it never ran dry.</summary>
    int Waits { get; }

    /// <summary>Lets the loop's other sockets have their turn; the caller continues on the loop's thread.</summary>
    EventLoop.YieldAwaitable Yield();

    /// <summary>Runs <paramref name="work"/> on the loop's thread when it has nothing else to do (call from that thread).</summary>
    void WhenIdle(IIdleWork work);

    /// <summary>Fails the process when loop-owned state is touched from another thread (under the affinity check switch).</summary>
    void AssertOnLoop(string what);
}

/// <summary>
/// The calls of a plain socket below its Stream: a reply header and its data in one sendmsg, data straight from a file
/// (sendfile), and a read that never waits. Only a socket with no TLS above it offers them.
/// </summary>
internal interface IDirectSocket
{
    ValueTask WriteGatheredAsync(ReadOnlyMemory<byte> header, ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

    ValueTask SendFileAsync(ReadOnlyMemory<byte> header, SafeHandle file, long offset, int count, CancellationToken cancellationToken);

    /// <summary>What the peer has sent by now, without waiting: 0 when nothing (or the end of the stream).</summary>
    int TryReadNow(Span<byte> buffer);

    /// <summary>
    /// Moves up to <paramref name="count"/> bytes from the peer into <paramref name="pipe"/> (splice), waiting for the
    /// first of them as a read does: how many (0 at the end of the stream), or <see cref="SplicePipeFull"/> when bytes
    /// are there but the pipe takes no more.
    /// </summary>
    ValueTask<int> SpliceAsync(PayloadPipe pipe, int count, CancellationToken cancellationToken);

    public const int SplicePipeFull = -2;
}
