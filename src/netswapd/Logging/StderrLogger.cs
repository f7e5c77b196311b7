using Microsoft.Extensions.Logging;

namespace NetSwap.Daemon.Logging;

/// <summary>
/// Log lines on stderr, never stdout (in inetd mode stdout is the client's socket). Under systemd (JOURNAL_STREAM set)
/// each line carries a syslog priority prefix and no timestamp, as journald expects.
/// </summary>
internal sealed class StderrLoggerProvider : ILoggerProvider
{
    private readonly LogLevel _minimum;
    private readonly bool _journal;
    private readonly Lock _lock = new();
    private readonly TextWriter _output;

    public StderrLoggerProvider(LogLevel minimum, TextWriter? output = null)
    {
        _minimum = minimum;
        _output = output ?? Console.Error;
        _journal = output is null && Environment.GetEnvironmentVariable("JOURNAL_STREAM") is not null;
    }

    public ILogger CreateLogger(string categoryName) => new StderrLogger(this);

    public void Dispose()
    {
    }

    private void Write(LogLevel level, string message, Exception? exception)
    {
        var line = _journal
            ? $"<{SyslogPriority(level)}>{message}"
            : $"{DateTime.UtcNow:yyyy-MM-ddTHH:mm:ss.fffZ} {LevelName(level)} {message}";
        if (exception is not null)
        {
            line += Environment.NewLine + exception;
        }
        lock (_lock)
        {
            _output.WriteLine(line);
        }
    }

    private static int SyslogPriority(LogLevel level) => level switch
    {
        LogLevel.Critical => 2,
        LogLevel.Error => 3,
        LogLevel.Warning => 4,
        LogLevel.Information => 6,
        _ => 7,
    };

    private static string LevelName(LogLevel level) => level switch
    {
        LogLevel.Critical => "crit",
        LogLevel.Error => "error",
        LogLevel.Warning => "warn",
        LogLevel.Information => "info",
        LogLevel.Debug => "debug",
        _ => "trace",
    };

    private sealed class StderrLogger(StderrLoggerProvider provider) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= provider._minimum && logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                provider.Write(logLevel, formatter(state, exception), exception);
            }
        }
    }
}
