using System.Collections.Concurrent;
using System.Net.Sockets;
using NetSwap.Server.Transport;

namespace NetSwap.Server.Hosting;

/// <summary>
/// Accepts connections on any number of listening sockets (bound here or passed by systemd) or serves one already
/// connected socket (inetd), and shuts down as the spec asks: no new connections, requests in flight finished, later
/// requests answered ESHUTDOWN, then every connection closed.
/// </summary>
internal sealed class NbdServer : IAsyncDisposable
{
    private readonly NbdServerContext _context;
    private readonly List<Socket> _listeners = [];
    private readonly List<Task> _acceptLoops = [];
    private readonly ConcurrentDictionary<long, (NbdConnection Connection, Task Task)> _connections = new();
    private readonly CancellationTokenSource _stopAccepting = new();
    private readonly Timer _refusalReport;
    private static readonly TimeSpan RefusalReportInterval = TimeSpan.FromSeconds(10);
    // Looks for connections whose client stopped holding up its end (send-timeout, payload-timeout); armed only while
    // there are connections (under _progressGate), so an idle server has no timer ticking twice a second.
    private readonly Timer _progressCheck;
    private readonly Lock _progressGate = new();
    private bool _progressArmed;
    private static readonly TimeSpan ProgressCheckInterval = TimeSpan.FromMilliseconds(500);
    /// <summary>Large payload buffers are kept for what the last 10 progress checks (5 s) needed, and let go only 16 or
    /// more at a time (2 MiB or more: each time costs a full collection).</summary>
    private const int BufferNeedLooks = 10;
    private const int BufferTrimSlack = 16;
    private readonly BurstMemoryTrim _trim = new(16L << 20);
    private readonly Lock _trimGate = new();

    public NbdServer(NbdServerContext context)
    {
        _context = context;
        _refusalReport = new Timer(static s => ((NbdServer)s!).ReportRefusals(), this, RefusalReportInterval, RefusalReportInterval);
        _progressCheck = new Timer(static s => ((NbdServer)s!).CheckProgress(), this, Timeout.Infinite, Timeout.Infinite);
    }

    private void ArmProgressCheck()
    {
        lock (_progressGate)
        {
            if (!_progressArmed)
            {
                _progressArmed = true;
                _progressCheck.Change(ProgressCheckInterval, ProgressCheckInterval);
            }
        }
    }

    private void CheckProgress()
    {
        var idle = false;
        lock (_progressGate)
        {
            // A connection added after this check arms the timer again itself.
            if (_connections.IsEmpty)
            {
                _progressArmed = false;
                _progressCheck.Change(Timeout.Infinite, Timeout.Infinite);
                idle = true;
            }
        }
        if (!idle)
        {
            var now = System.Diagnostics.Stopwatch.GetTimestamp();
            foreach (var (connection, _) in _connections.Values)
            {
                connection.CheckProgress(now);
            }
        }
        TrimAfterBurst();
    }

    /// <summary>On the progress timer (timer callbacks may overlap, hence the lock): see <see cref="BurstMemoryTrim"/>.</summary>
    private void TrimAfterBurst()
    {
        lock (_trimGate)
        {
            var connections = _connections.Count;
            var before = GC.GetTotalMemory(false);
            if (_trim.ShouldTrim(connections, before))
            {
                // The burst is over: its kept payload buffers go too.
                Transmission.PayloadBuffers.Trim();
                Transmission.PayloadPipes.Trim();
                BurstMemoryTrim.Collect();
                var after = GC.GetTotalMemory(false);
                _trim.Trimmed(connections, after);
                ServerLog.MemoryTrimmed(_context.Logger, connections, before >> 20, after >> 20);
            }
            else
            {
                // Kept pipes are closed, nothing more: their memory is the kernel's.
                _ = Transmission.PayloadPipes.TrimToRecentNeed(BufferNeedLooks, BufferTrimSlack);
                if (Transmission.PayloadBuffers.TrimToRecentNeed(BufferNeedLooks, BufferTrimSlack) is var dropped and > 0)
                {
                    // The blocking, compacting collection of a burst's end: a background one gave nothing back within the 10 s
                    // of a bench/swapscale.sh run. It pauses the clients once, for a trim of 2 MiB or more.
                    BurstMemoryTrim.Collect();
                    ServerLog.PayloadBuffersTrimmed(_context.Logger, dropped, before >> 20, GC.GetTotalMemory(false) >> 20);
                }
            }
        }
    }

    /// <summary>Connections closed at once by a limit are summed up here every few seconds, never logged one by one.</summary>
    private void ReportRefusals()
    {
        var (rate, perAddress, total) = _context.Gate.Connections.TakeRefusals();
        if (rate + perAddress + total > 0)
        {
            ServerLog.ConnectionsRefused(_context.Logger, (int)RefusalReportInterval.TotalSeconds, rate, perAddress, total);
        }
    }

    public NbdServerContext Context => _context;
    public int ConnectionCount => _connections.Count;
    public IEnumerable<NbdConnection> Connections => _connections.Values.Select(c => c.Connection);
    public IReadOnlyList<Socket> Listeners => _listeners;

    public void StartListening(Socket listener, bool oldstyle = false)
    {
        _listeners.Add(listener);
        ServerLog.Listening(_context.Logger, SocketSetup.Describe(listener.LocalEndPoint) + (oldstyle ? " (oldstyle handshake)" : ""));
        _acceptLoops.Add(Task.Run(() => AcceptLoopAsync(listener, oldstyle)));
    }

    private async Task AcceptLoopAsync(Socket listener, bool oldstyle)
    {
        var endpoint = SocketSetup.Describe(listener.LocalEndPoint);
        var delay = 0;
        while (!_stopAccepting.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync(_stopAccepting.Token);
                delay = 0;
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e) when (SocketSetup.IsConnectionReset(e.SocketErrorCode))
            {
                // The client gave up while queued: nothing to do.
                continue;
            }
            catch (SocketException e)
            {
                // Out of descriptors or memory: back off (10 ms doubling to 1 s) rather than spin (Garnet's HandleAcceptError).
                delay = delay == 0 ? 10 : Math.Min(delay * 2, 1000);
                ServerLog.AcceptFailed(_context.Logger, endpoint, e.Message, delay);
                try
                {
                    await Task.Delay(delay, _stopAccepting.Token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                continue;
            }
            _ = Serve(socket, oldstyle);
        }
    }

    /// <summary>Serves one connected socket: accepted here, or handed over by inetd.</summary>
    public Task Serve(Socket socket, bool oldstyle = false)
    {
        System.Net.IPEndPoint? peer;
        try
        {
            peer = socket.RemoteEndPoint as System.Net.IPEndPoint;
        }
        catch (SocketException)
        {
            socket.Dispose();
            return Task.CompletedTask;
        }
        if (_context.Gate.Connections.TryAdmit(peer?.Address) is not null)
        {
            // Over a limit: closed at once, before any byte is read or anything allocated; counted, not logged.
            socket.LingerState = new LingerOption(true, 0);
            socket.Dispose();
            return Task.CompletedTask;
        }
        Stream stream;
        try
        {
            SocketSetup.TuneAccepted(socket, _context.Options.Tcp);
            // Our own event loops where they run (Linux x86-64), .NET's socket engine elsewhere.
            stream = (Stream?)ReactorStream.TryCreate(socket) ?? new NetworkStream(socket, ownsSocket: true);
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            // Reset between accept and setup, or a descriptor handed over that is not a connected socket.
            _context.Gate.Connections.Release(peer?.Address);
            socket.Dispose();
            return Task.CompletedTask;
        }
        return Serve(stream, SocketSetup.Describe(peer), peer?.Address, oldstyle, counted: true);
    }

    /// <summary>Serves one connection over any duplex stream.</summary>
    public Task Serve(Stream stream, string remote, System.Net.IPAddress? address = null, bool oldstyle = false, bool counted = false)
    {
        var connection = new NbdConnection(_context, stream, remote, address);
        var started = new TaskCompletionSource();
        var task = RunAsync(connection, started.Task, oldstyle, counted);
        _connections[connection.Id] = (connection, task);
        ArmProgressCheck();
        started.SetResult();
        return task;
    }

    private async Task RunAsync(NbdConnection connection, Task registered, bool oldstyle, bool counted)
    {
        await registered;
        await Task.Yield();
        try
        {
            await connection.RunAsync(oldstyle);
        }
        finally
        {
            _connections.TryRemove(connection.Id, out _);
            if (counted)
            {
                _context.Gate.Connections.Release(connection.Info.Address);
            }
            await connection.DisposeAsync();
        }
    }

    /// <summary>SIGTERM: stop accepting, let requests in flight finish (up to the shutdown timeout), then close everything.</summary>
    public async Task StopAsync()
    {
        if (_stopAccepting.IsCancellationRequested)
        {
            return;
        }
        _context.BeginShutdown();
        await _stopAccepting.CancelAsync();
        foreach (var listener in _listeners)
        {
            listener.Dispose();
        }
        await Task.WhenAll(_acceptLoops);
        ServerLog.ShuttingDown(_context.Logger, _connections.Count, _context.Options.ShutdownTimeout);
        var deadline = DateTime.UtcNow + _context.Options.ShutdownTimeout;
        while (DateTime.UtcNow < deadline && _connections.Values.Any(c => c.Connection.HasRequestsInFlight))
        {
            await Task.Delay(20);
        }
        foreach (var (connection, _) in _connections.Values)
        {
            connection.Abort("server shut down");
        }
        // Cut connections end at once; should one not (a bug), shutdown still ends in bounded time: the process exits
        // and the kernel frees every area (they have no name on disk).
        var all = Task.WhenAll(_connections.Values.Select(c => c.Task));
        if (await Task.WhenAny(all, Task.Delay(ClosingGrace)) != all)
        {
            ServerLog.ConnectionsStuck(_context.Logger, _connections.Count, ClosingGrace.TotalSeconds);
        }
        ServerLog.Stopped(_context.Logger);
    }

    /// <summary>How long connections have to end once cut at shutdown.</summary>
    private static readonly TimeSpan ClosingGrace = TimeSpan.FromSeconds(1);

    public async ValueTask DisposeAsync()
    {
        await _refusalReport.DisposeAsync();
        await _progressCheck.DisposeAsync();
        await StopAsync();
        _stopAccepting.Dispose();
    }
}
