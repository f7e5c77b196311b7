using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;

namespace NetSwap.Daemon.Logging;

/// <summary>
/// Log lines to the local syslog socket (/dev/log, facility daemon), for inetd mode where stderr may be the client's
/// socket. Where no syslog daemon listens, lines are dropped: never written to the client.
/// </summary>
internal sealed class SyslogLoggerProvider : ILoggerProvider
{
    private const int FacilityDaemon = 3;
    private readonly LogLevel _minimum;
    private readonly Socket? _socket;
    private readonly string _tag = $"netswapd[{Environment.ProcessId}]: ";

    public SyslogLoggerProvider(LogLevel minimum, string path = "/dev/log")
    {
        _minimum = minimum;
        try
        {
            _socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            _socket.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException)
        {
            _socket?.Dispose();
            _socket = null;
        }
    }

    public ILogger CreateLogger(string categoryName) => new SyslogLogger(this);

    public void Dispose() => _socket?.Dispose();

    private void Write(LogLevel level, string message)
    {
        if (_socket is null)
        {
            return;
        }
        var severity = level switch
        {
            LogLevel.Critical => 2,
            LogLevel.Error => 3,
            LogLevel.Warning => 4,
            LogLevel.Information => 6,
            _ => 7,
        };
        try
        {
            _socket.Send(Encoding.UTF8.GetBytes($"<{(FacilityDaemon * 8) + severity}>{_tag}{message}"));
        }
        catch (SocketException)
        {
        }
    }

    private sealed class SyslogLogger(SyslogLoggerProvider provider) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= provider._minimum && logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                provider.Write(logLevel, formatter(state, exception) + (exception is null ? "" : " " + exception.Message));
            }
        }
    }
}
