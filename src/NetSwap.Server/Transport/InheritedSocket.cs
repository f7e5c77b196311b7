using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace NetSwap.Server.Transport;

/// <summary>
/// A connected socket handed to us by inetd or systemd (Accept=yes). .NET builds a <see cref="Socket"/> from such a
/// descriptor without knowing it is connected (Connected is false, RemoteEndPoint null), so NetworkStream refuses it:
/// this stream sends and receives on it directly, and the peer address comes from getpeername(2).
/// </summary>
internal sealed partial class InheritedSocketStream : Stream
{
    private readonly Socket _socket;

    public InheritedSocketStream(Socket socket) => _socket = socket;

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Flush()
    {
    }

    public override int Read(byte[] buffer, int offset, int count) => _socket.Receive(buffer, offset, count, SocketFlags.None);

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        _socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(byte[] buffer, int offset, int count)
    {
        while (count > 0)
        {
            var n = _socket.Send(buffer, offset, count, SocketFlags.None);
            offset += n;
            count -= n;
        }
    }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (!buffer.IsEmpty)
        {
            var n = await _socket.SendAsync(buffer, SocketFlags.None, cancellationToken);
            buffer = buffer[n..];
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _socket.Dispose();
        }
        base.Dispose(disposing);
    }

    [LibraryImport("libc", EntryPoint = "getpeername", SetLastError = true)]
    private static partial int GetPeerName(SafeSocketHandle socket, Span<byte> address, ref int length);

    /// <summary>The peer of a connected IPv4 or IPv6 socket; null when it is something else (a pipe, a Unix socket).</summary>
    public static IPEndPoint? PeerOf(Socket socket)
    {
        Span<byte> address = stackalloc byte[128];
        var length = address.Length;
        if (GetPeerName(socket.SafeHandle, address, ref length) != 0 || length < 2)
        {
            return null;
        }
        var family = BinaryPrimitives.ReadUInt16LittleEndian(address);
        var port = BinaryPrimitives.ReadUInt16BigEndian(address[2..]);
        return family switch
        {
            2 when length >= 8 => new IPEndPoint(new IPAddress(address.Slice(4, 4)), port),
            10 when length >= 24 => new IPEndPoint(new IPAddress(address.Slice(8, 16), BinaryPrimitives.ReadUInt32LittleEndian(address[24..])), port),
            _ => null,
        };
    }
}
