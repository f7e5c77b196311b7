using Microsoft.Extensions.Logging;
using NetSwap.Protocol.Nbd;
using NetSwap.Server.Hosting;
using NetSwap.Server.Transmission;

namespace NetSwap.Fuzz;

/// <summary>
/// Fuzz targets for everything a client can send. Each takes arbitrary bytes; the only acceptable outcomes are a
/// parsed message, a "not enough bytes" answer, an <see cref="NbdProtocolException"/>, or (for the connection) an
/// orderly close. Anything else is a bug the fuzzer reports as a crash.
/// </summary>
public static class FuzzTargets
{
    private static readonly MemoryExportCatalog s_catalog = new(1024 * 1024, 512 * 1024, 516 * 1024);

    /// <summary>Parsers of client messages: option headers, INFO/GO data, requests, and their validation.</summary>
    public static void Parsers(ReadOnlySpan<byte> data)
    {
        try
        {
            NbdOptionHeader.TryRead(data, out _);
        }
        catch (NbdProtocolException)
        {
        }
        NbdInfoRequest.TryParse(data, out _, out _);
        NbdStrings.TryDecode(data, out _);
        try
        {
            if (NbdRequest.TryRead(data, out var request))
            {
                foreach (var structured in new[] { false, true })
                {
                    RequestValidator.Validate(request, NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFua | NbdTransmissionFlags.SendTrim, 1 << 20, structured);
                    RequestValidator.Validate(request, NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.ReadOnly, ulong.MaxValue, structured, blockStatus: structured);
                }
            }
        }
        catch (NbdProtocolException)
        {
        }
    }

    /// <summary>
    /// A whole connection fed the bytes as what the client sent: handshake, options and (if it gets that far) requests.
    /// The in-memory export makes every input deterministic and fast.
    /// </summary>
    /// <returns>Bytes the client got written to the export: lets a test check a valid session really ran.</returns>
    public static long Connection(ReadOnlySpan<byte> data)
    {
        var options = new NbdServerOptions { HandshakeTimeout = TimeSpan.FromSeconds(5), ShutdownTimeout = TimeSpan.Zero };
        var logger = new FailureLogger();
        var context = new NbdServerContext(s_catalog, options, logger);
        var input = new ClientBytesStream(data.ToArray());
        var connection = new NbdConnection(context, input, "fuzz");
        var run = connection.RunAsync();
        if (!run.Wait(TimeSpan.FromSeconds(10)))
        {
            throw new TimeoutException("connection did not finish on end of input: a hang");
        }
        connection.DisposeAsync().AsTask().GetAwaiter().GetResult();
        if (logger.Failure is { } failure)
        {
            // The connection caught it and closed, but an "unexpected failure" is a bug: make the fuzzer see a crash.
            throw new InvalidOperationException("connection logged an unexpected failure: " + failure);
        }
        return connection.BytesWritten;
    }

    /// <summary>Keeps the first Error-level message: the server logs bugs (never client mistakes) at that level.</summary>
    private sealed class FailureLogger : ILogger
    {
        public string? Failure { get; private set; }
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= LogLevel.Error)
            {
                Failure ??= formatter(state, exception) + " " + exception;
            }
        }
    }

    /// <summary>Reads return the fuzz input then end of stream; writes (the server's replies) are discarded.</summary>
    private sealed class ClientBytesStream(byte[] input) : Stream
    {
        private readonly MemoryStream _input = new(input);

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => _input.Read(buffer, offset, count);
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(_input.Read(buffer.Span));
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) { }
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;
    }
}
