using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using NetSwap.Server.Exports;
using NetSwap.Server.Exports.Swap;
using NetSwap.Server.Hosting;
using NetSwap.Server.Transport;

namespace NetSwap.Tests.Support;

/// <summary>An in-process server on 127.0.0.1 with an OS-assigned port, over temporary file exports.</summary>
public sealed class ServerHarness : IAsyncDisposable
{
    private readonly IDisposable _catalog;
    private readonly NbdServer _server;

    private ServerHarness(string directory, IDisposable catalog, NbdServer server, CapturingLogger logger)
    {
        Directory = directory;
        _catalog = catalog;
        _server = server;
        Log = logger;
    }

    public string Directory { get; }
    public CapturingLogger Log { get; }
    public int Port => ((IPEndPoint)_server.Listeners[0].LocalEndPoint!).Port;
    public string Uri(string export) => $"nbd://127.0.0.1:{Port}/{export}";
    internal NbdServer Server => _server;
    internal NbdServerContext Context => _server.Context;

    /// <summary>The TLS URI libnbd takes: nbds://…/EXPORT?tls-certificates=DIR.</summary>
    public string TlsUri(string export, string clientDirectory) => $"nbds://127.0.0.1:{Port}/{export}?tls-certificates={clientDirectory}";

    public string PathOf(string export) => System.IO.Path.Combine(Directory, export + ".img");

    /// <summary>Exports: (name, size in bytes, read-only). Files are sparse and zero-filled.</summary>
    public static Task<ServerHarness> StartAsync(params (string Name, long Size, bool ReadOnly)[] exports) => StartAsync(null, exports);

    internal static Task<ServerHarness> StartAsync(Action<NbdServerOptions>? configure, params (string Name, long Size, bool ReadOnly)[] exports)
    {
        var directory = System.IO.Directory.CreateTempSubdirectory("netswap-test-").FullName;
        var definitions = new List<ExportDefinition>();
        foreach (var (name, size, readOnly) in exports)
        {
            var path = System.IO.Path.Combine(directory, name + ".img");
            using (var file = File.Create(path))
            {
                file.SetLength(size);
            }
            definitions.Add(new ExportDefinition(name, path, readOnly, name == "described" ? "a described export" : null));
        }
        var options = new NbdServerOptions();
        configure?.Invoke(options);
        var logger = new CapturingLogger();
        var catalog = new FileExportCatalog(definitions, null);
        return Task.FromResult(Start(directory, catalog, catalog, options, logger));
    }

    /// <summary>A swap server (no file exports unless given) whose areas live in <paramref name="swapDirectory"/>.</summary>
    internal static ServerHarness StartSwap(string swapDirectory, Action<SwapOptions>? configureSwap = null, Action<NbdServerOptions>? configure = null, params (string Name, long Size, bool ReadOnly)[] exports)
    {
        var logger = new CapturingLogger();
        var swapOptions = new SwapOptions { Directory = swapDirectory, DefaultSize = 16L << 20, Grace = TimeSpan.FromSeconds(30) };
        configureSwap?.Invoke(swapOptions);
        var directory = SwapDirectory.Prepare(swapOptions.Directory, isDefault: false, out _);
        var registry = new SwapAreaRegistry(swapOptions, directory, logger);
        var temp = System.IO.Directory.CreateTempSubdirectory("netswap-test-").FullName;
        var definitions = exports.Select(e =>
        {
            var path = System.IO.Path.Combine(temp, e.Name + ".img");
            using (var file = File.Create(path))
            {
                file.SetLength(e.Size);
            }
            return new ExportDefinition(e.Name, path, e.ReadOnly, null);
        }).ToList();
        var catalog = new ExportCatalog(new FileExportCatalog(definitions, null), new SwapExportSource(registry));
        var options = new NbdServerOptions();
        configure?.Invoke(options);
        return Start(temp, catalog, catalog, options, logger);
    }

    internal SwapAreaRegistry Registry => ((ExportCatalog)Context.Exports).Swap!.Registry;

    /// <summary>Adds a dual-stack [::] listener (as systemd's BindIPv6Only=both gives): IPv4 clients arrive IPv4-mapped.</summary>
    public int ListenDualStack()
    {
        var socket = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp) { DualMode = true };
        socket.Bind(new IPEndPoint(IPAddress.IPv6Any, 0));
        socket.Listen(64);
        _server.StartListening(socket);
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    /// <summary>Connects to a port from a chosen source address (IPv4 or IPv6 loopback).</summary>
    public static async Task<TestNbdClient> ConnectAsync(int port, string sourceAddress, string target)
    {
        var source = IPAddress.Parse(sourceAddress);
        var socket = new Socket(source.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        socket.Bind(new IPEndPoint(source, 0));
        await socket.ConnectAsync(IPAddress.Parse(target), port);
        return new TestNbdClient(new NetworkStream(socket, ownsSocket: true));
    }

    /// <summary>Connects from a chosen loopback source address (127.0.0.0/8 offers many), to test per-address rules.</summary>
    public async Task<TestNbdClient> ConnectFromAsync(string sourceAddress)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        socket.Bind(new IPEndPoint(IPAddress.Parse(sourceAddress), 0));
        await socket.ConnectAsync(IPAddress.Loopback, Port);
        return new TestNbdClient(new NetworkStream(socket, ownsSocket: true));
    }

    /// <summary>A server over any catalog (test doubles for failures a real file cannot produce on demand).</summary>
    internal static ServerHarness Start(IExportCatalog catalog, Action<NbdServerOptions>? configure = null)
    {
        var options = new NbdServerOptions();
        configure?.Invoke(options);
        var directory = System.IO.Directory.CreateTempSubdirectory("netswap-test-").FullName;
        return Start(directory, catalog, (IDisposable)catalog, options, new CapturingLogger());
    }

    private static ServerHarness Start(string directory, IExportCatalog catalog, IDisposable lifetime, NbdServerOptions options, CapturingLogger logger)
    {
        var server = new NbdServer(new NbdServerContext(catalog, options, logger));
        server.StartListening(SocketSetup.Listen(new IPEndPoint(IPAddress.Loopback, 0)));
        return new ServerHarness(directory, lifetime, server, logger);
    }

    public async Task<TestNbdClient> ConnectAsync()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(IPAddress.Loopback, Port);
        return new TestNbdClient(new NetworkStream(socket, ownsSocket: true));
    }

    /// <summary>A client connected through an in-memory duplex pipe: the same connection code, no socket.</summary>
    public TestNbdClient ConnectInMemory(out Task serverTask) => ConnectInMemory(out serverTask, out _);

    /// <summary>As above, with the server's end of the pipe, to count what the server writes.</summary>
    public TestNbdClient ConnectInMemory(out Task serverTask, out DuplexPipeStream serverEnd)
    {
        var (client, server) = DuplexPipeStream.CreatePair();
        serverEnd = server;
        serverTask = _server.Serve(server, "memory");
        return new TestNbdClient(client);
    }

    public async ValueTask DisposeAsync()
    {
        await _server.DisposeAsync();
        _catalog.Dispose();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

public sealed class CapturingLogger : ILogger
{
    private readonly ConcurrentQueue<string> _lines = new();

    public IReadOnlyCollection<string> Lines => _lines;

    public bool Contains(string text) => _lines.Any(l => l.Contains(text, StringComparison.Ordinal));

    /// <summary>Waits for a line containing the text (connection logs are written as the connection closes).</summary>
    public async Task<bool> WaitForAsync(string text, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(10));
        while (DateTime.UtcNow < deadline)
        {
            if (Contains(text))
            {
                return true;
            }
            await Task.Delay(20);
        }
        return false;
    }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;
    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        _lines.Enqueue($"{logLevel}: {formatter(state, exception)}{(exception is null ? "" : " " + exception.GetType().Name)}");
}
