using System.IO.Pipelines;

namespace NetSwap.Tests.Support;

/// <summary>An in-memory connection: two pipes, one each way. <see cref="CreatePair"/> gives both ends.</summary>
public sealed class DuplexPipeStream : Stream
{
    private readonly Stream _input;
    private readonly Stream _output;
    private readonly PipeWriter _writer;
    private readonly PipeReader _reader;

    private DuplexPipeStream(PipeReader reader, PipeWriter writer)
    {
        _reader = reader;
        _writer = writer;
        _input = reader.AsStream();
        _output = writer.AsStream();
    }

    public static (DuplexPipeStream Client, DuplexPipeStream Server) CreatePair()
    {
        var toServer = new Pipe();
        var toClient = new Pipe();
        return (new DuplexPipeStream(toClient.Reader, toServer.Writer), new DuplexPipeStream(toServer.Reader, toClient.Writer));
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public override int Read(byte[] buffer, int offset, int count) => _input.Read(buffer, offset, count);
    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => _input.ReadAsync(buffer, cancellationToken);
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => _input.ReadAsync(buffer, offset, count, cancellationToken);
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    /// <summary>How many writes this end made (each would be one system call on a socket).</summary>
    public int Writes => Volatile.Read(ref _writes);
    private int _writes;

    public override void Write(byte[] buffer, int offset, int count)
    {
        Interlocked.Increment(ref _writes);
        _output.Write(buffer, offset, count);
    }
    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref _writes);
        await _output.WriteAsync(buffer, cancellationToken);
        await _output.FlushAsync(cancellationToken);
    }
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _writer.Complete();
            _reader.Complete();
        }
        base.Dispose(disposing);
    }
}
