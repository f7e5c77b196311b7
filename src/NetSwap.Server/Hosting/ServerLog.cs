using Microsoft.Extensions.Logging;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Server.Hosting;

/// <summary>Connection events. Every message carries the connection id and the client address.</summary>
internal static partial class ConnectionLog
{
    [LoggerMessage(100, LogLevel.Information, "conn {ConnectionId} from {Client}: connected")]
    public static partial void Connected(ILogger logger, long connectionId, string client);

    [LoggerMessage(101, LogLevel.Information, "conn {ConnectionId} from {Client}: closed after {Duration:F1}s ({Reason}); read {BytesRead} B, wrote {BytesWritten} B")]
    public static partial void Closed(ILogger logger, long connectionId, string client, double duration, string reason, long bytesRead, long bytesWritten);

    [LoggerMessage(102, LogLevel.Warning, "conn {ConnectionId} from {Client}: handshake failed: {Reason}")]
    public static partial void HandshakeFailed(ILogger logger, long connectionId, string client, string reason);

    [LoggerMessage(103, LogLevel.Information, "conn {ConnectionId} from {Client}: export '{Export}' attached, size {Size}, flags {Flags}, structured replies {Structured}")]
    public static partial void ExportAttached(ILogger logger, long connectionId, string client, string export, long size, NbdTransmissionFlags flags, bool structured);

    [LoggerMessage(104, LogLevel.Warning, "conn {ConnectionId} from {Client}: export '{Export}' refused: {Error} {Reason}")]
    public static partial void ExportRefused(ILogger logger, long connectionId, string client, string export, NbdOptionReplyType error, string reason);

    [LoggerMessage(105, LogLevel.Debug, "conn {ConnectionId} from {Client}: option {Option} ({Length} bytes) answered {Reply}")]
    public static partial void OptionAnswered(ILogger logger, long connectionId, string client, NbdOption option, uint length, NbdOptionReplyType reply);

    [LoggerMessage(106, LogLevel.Warning, "conn {ConnectionId} from {Client}: protocol violation, closing: {Reason}")]
    public static partial void ProtocolViolation(ILogger logger, long connectionId, string client, string reason);

    [LoggerMessage(107, LogLevel.Debug, "conn {ConnectionId} from {Client}: request {Command} {Offset}+{Length} refused with {Error}: {Reason}")]
    public static partial void RequestInvalid(ILogger logger, long connectionId, string client, NbdCommand command, ulong offset, uint length, NbdError error, string reason);

    [LoggerMessage(108, LogLevel.Warning, "conn {ConnectionId} from {Client}: {Command} {Offset}+{Length} failed: errno {Errno} ({Message}), answered {Error}")]
    public static partial void RequestFailed(ILogger logger, long connectionId, string client, NbdCommand command, ulong offset, uint length, int errno, string message, NbdError error);

    [LoggerMessage(109, LogLevel.Warning, "conn {ConnectionId} from {Client}: handshake timed out after {Timeout}")]
    public static partial void HandshakeTimedOut(ILogger logger, long connectionId, string client, TimeSpan timeout);

    [LoggerMessage(110, LogLevel.Debug, "conn {ConnectionId} from {Client}: connection error: {Reason}")]
    public static partial void ConnectionError(ILogger logger, long connectionId, string client, string reason);

    [LoggerMessage(111, LogLevel.Error, "conn {ConnectionId} from {Client}: unexpected failure")]
    public static partial void UnexpectedFailure(ILogger logger, Exception exception, long connectionId, string client);

    [LoggerMessage(113, LogLevel.Warning, "conn {ConnectionId} from {Client}: refused by the access rules: {Reason}")]
    public static partial void AccessDenied(ILogger logger, long connectionId, string client, string reason);

    [LoggerMessage(114, LogLevel.Information, "conn {ConnectionId} from {Client}: TLS established ({Protocol}, {Cipher}); client certificate {Subject}, SHA-256 {Fingerprint}")]
    public static partial void TlsEstablished(ILogger logger, long connectionId, string client, string protocol, string cipher, string subject, string fingerprint);

    [LoggerMessage(115, LogLevel.Warning, "conn {ConnectionId} from {Client}: TLS refused: {Reason}; client certificate {Subject}, SHA-256 {Fingerprint}")]
    public static partial void TlsRefused(ILogger logger, long connectionId, string client, string reason, string subject, string fingerprint);

    [LoggerMessage(116, LogLevel.Warning, "conn {ConnectionId} from {Client}: {What} for {Seconds} s, cutting the connection")]
    public static partial void StalledClient(ILogger logger, long connectionId, string client, string what, double seconds);

    [LoggerMessage(112, LogLevel.Information, "conn {ConnectionId} from {Client}: list of exports sent")]
    public static partial void ExportsListed(ILogger logger, long connectionId, string client);
}

/// <summary>Listener and process events.</summary>
internal static partial class ServerLog
{
    [LoggerMessage(10, LogLevel.Debug, "a burst of connections is over ({Connections} left): heap {BeforeMiB} MiB, {AfterMiB} MiB after a full collection")]
    public static partial void MemoryTrimmed(ILogger logger, int connections, long beforeMiB, long afterMiB);

    [LoggerMessage(117, LogLevel.Debug, "large payload buffers beyond the last seconds' need let go ({Buffers}): heap {BeforeMiB} MiB, {AfterMiB} MiB after a full collection")]
    public static partial void PayloadBuffersTrimmed(ILogger logger, int buffers, long beforeMiB, long afterMiB);

    [LoggerMessage(1, LogLevel.Information, "listening on {Endpoint}")]
    public static partial void Listening(ILogger logger, string endpoint);

    [LoggerMessage(2, LogLevel.Warning, "accept on {Endpoint} failed ({Error}); retrying in {Delay} ms")]
    public static partial void AcceptFailed(ILogger logger, string endpoint, string error, int delay);

    [LoggerMessage(3, LogLevel.Information, "shutting down: {Connections} connections open, waiting up to {Timeout} for requests in flight")]
    public static partial void ShuttingDown(ILogger logger, int connections, TimeSpan timeout);

    [LoggerMessage(10, LogLevel.Error, "{Connections} connections did not end within {Seconds} s of being cut; exiting all the same")]
    public static partial void ConnectionsStuck(ILogger logger, int connections, double seconds);

    [LoggerMessage(4, LogLevel.Information, "stopped")]
    public static partial void Stopped(ILogger logger);

    [LoggerMessage(5, LogLevel.Information, "export '{Name}': {Path}, {Size} bytes, {Mode}")]
    public static partial void ExportConfigured(ILogger logger, string name, string path, long size, string mode);

    [LoggerMessage(7, LogLevel.Warning, "closed at once in the last {Seconds} s: {Rate} connections over connection-rate, {PerAddress} over max-clients-per-address, {Total} over max-clients")]
    public static partial void ConnectionsRefused(ILogger logger, int seconds, long rate, long perAddress, long total);

    [LoggerMessage(8, LogLevel.Information, "access: {Rule}")]
    public static partial void AccessRule(ILogger logger, string rule);

    [LoggerMessage(9, LogLevel.Information, "access limits: max-clients {MaxClients}, max-clients-per-address {PerAddress}, max-clients-per-export {PerExport}, connection-rate {Rate}/s (burst {Burst}), bandwidth-per-client {PerClient} B/s, bandwidth-total {Total} B/s (0: no limit); client list {ClientList}")]
    public static partial void AccessLimits(ILogger logger, int maxClients, int perAddress, int perExport, double rate, int burst, long perClient, long total, string clientList);

    [LoggerMessage(6, LogLevel.Information, "limits: handshake timeout {HandshakeTimeout}, {MaxInFlight} requests in flight and {BufferBytes} B of buffers per connection and {PayloadMemory} B for all, shutdown timeout {ShutdownTimeout}, send timeout {SendTimeout}, payload timeout {PayloadTimeout}")]
    public static partial void Limits(ILogger logger, TimeSpan handshakeTimeout, int maxInFlight, int bufferBytes, int payloadMemory, TimeSpan shutdownTimeout, TimeSpan sendTimeout, TimeSpan payloadTimeout);
}
