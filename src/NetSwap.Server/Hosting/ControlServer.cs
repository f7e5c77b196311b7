using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using NetSwap.Protocol.Control;
using NetSwap.Server.Exports;
using NetSwap.Server.Exports.Swap;

namespace NetSwap.Server.Hosting;

/// <summary>
/// The administrator's view: a Unix socket (mode 0600, so only root and the service user open it)
/// answering <c>status</c> with a JSON <see cref="ServerStatus"/>.
/// </summary>
internal sealed partial class ControlServer : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly string _path;
    private readonly Func<ServerStatus> _status;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    private ControlServer(Socket listener, string path, Func<ServerStatus> status, ILogger logger)
    {
        _listener = listener;
        _path = path;
        _status = status;
        _logger = logger;
        _loop = Task.Run(AcceptLoopAsync);
    }

    public string Path => _path;

    public static ControlServer Start(string path, Func<ServerStatus> status, ILogger logger)
    {
        var directory = System.IO.Path.GetDirectoryName(path)!;
        if (!Directory.Exists(directory))
        {
            // Ours: made 0700. An existing directory (systemd's RuntimeDirectory, a shared one) keeps its mode; the
            // socket itself is 0600, which is what guards it.
            Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        if (System.IO.Path.Exists(path))
        {
            if (!FileKind.IsSocket(path))
            {
                throw new IOException($"control-socket {path} exists and is not a socket; it was left alone");
            }
            if (IsListening(path))
            {
                throw new IOException($"control-socket {path}: another netswapd is answering there");
            }
            // A socket left by a daemon that died: nobody listens on it any more.
            File.Delete(path);
        }
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(path));
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            socket.Listen(16);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        ControlLog.Listening(logger, path);
        return new ControlServer(socket, path, status, logger);
    }

    private static bool IsListening(string path)
    {
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                if (_stop.IsCancellationRequested)
                {
                    return;
                }
                await Task.Delay(100);
                continue;
            }
            _ = Task.Run(() => AnswerAsync(client));
        }
    }

    private async Task AnswerAsync(Socket client)
    {
        using var _ = client;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            var buffer = new byte[256];
            var length = 0;
            while (length < buffer.Length && Array.IndexOf(buffer, (byte)'\n', 0, length) < 0)
            {
                var n = await client.ReceiveAsync(buffer.AsMemory(length), timeout.Token);
                if (n == 0)
                {
                    break;
                }
                length += n;
            }
            var command = Encoding.ASCII.GetString(buffer, 0, length).Trim();
            var reply = command == "status"
                ? ControlJsonContext.Serialize(_status())
                : $"{{\"error\": \"unknown command; known: status\"}}";
            await client.SendAsync(Encoding.UTF8.GetBytes(reply + "\n"), timeout.Token);
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
            ControlLog.Failed(_logger, e.Message);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        await _loop;
        try
        {
            File.Delete(_path);
        }
        catch (IOException)
        {
        }
        _stop.Dispose();
    }

    /// <summary>The status document of a running server.</summary>
    public static ServerStatus Snapshot(NbdServer server, ExportCatalog catalog, string version, DateTimeOffset startedAt)
    {
        var clients = server.Connections
            .Where(c => c.ExportName is not null)
            .OrderBy(c => c.Id)
            .Select(c => new ClientStatus(c.Id, c.Client, c.ExportName!, c.ExportSize, c.SwapArea?.Reserved ?? 0, c.BytesRead, c.BytesWritten, c.ConnectedAt))
            .ToList();
        SwapStatus? swap = null;
        if (catalog.Swap is { } source)
        {
            var registry = source.Registry;
            var (total, available) = registry.Directory.Space();
            var areas = registry.Snapshot().Select(a => new SwapAreaStatus(a.Id, a.Client, a.Export, a.Token, a.Size, a.Reserved,
                Interlocked.Read(ref a.BytesRead), Interlocked.Read(ref a.BytesWritten),
                a.State == SwapAreaState.Grace ? "grace" : "attached", a.CreatedAt, a.GraceDeadline)).ToList();
            swap = new SwapStatus(registry.Directory.Path, registry.Committed, registry.Options.Budget, total, available, areas);
        }
        return new ServerStatus(version, startedAt, clients, swap);
    }

    private static partial class ControlLog
    {
        [LoggerMessage(400, LogLevel.Information, "control socket {Path}")]
        public static partial void Listening(ILogger logger, string path);

        [LoggerMessage(401, LogLevel.Debug, "control request failed: {Reason}")]
        public static partial void Failed(ILogger logger, string reason);
    }
}
