using System.Diagnostics;
using System.Runtime.InteropServices;

namespace NetSwap.Server.Transport;

/// <summary>
/// One epoll instance and the thread that waits on it. A socket's readiness runs its waiting reader or writer right on
/// this thread (during the transmission phase, see <see cref="ReactorStream.InlineCompletions"/>), so a request goes
/// from the kernel's wake-up to its reply without passing through the thread pool (nbdkit's threads block in recv for the
/// same reason). After a burst of events the thread keeps polling for a short while (<see cref="SpinTime"/>) before it
/// sleeps: a client at queue depth 1 sends its next request within microseconds of a reply, and a thread that has gone to
/// sleep (a halted virtual CPU, here) takes longer than that to wake.
/// Sockets are registered edge-triggered, once, for both directions (as .NET's own engine does); the streams keep an
/// event sequence number so that an edge between a failed attempt and the wait is never lost.
/// </summary>
internal sealed unsafe class EventLoop
{
    private const int MaxEvents = 256;

    /// <summary>How long the loop polls after its last event before it sleeps in epoll_wait.</summary>
    public static readonly TimeSpan SpinTime = TimeSpan.FromMicroseconds(50);

    private readonly int _epoll;
    private readonly long _spinTicks;
    private readonly Lock _gate = new();
    // Registered streams by slot; the key handed out is generation << 32 | slot, so an event that arrives for a slot after
    // it was freed and given to another socket reaches no one (a spurious wake-up at worst, which readers tolerate).
    private Entry[] _entries = new Entry[64];
    private readonly Stack<int> _free = new();
    private int _used;
    // Work to do when the loop is about to sleep (loop thread only): connections giving back buffers kept while busy.
    private List<IIdleWork> _idleWork = [];
    private List<IIdleWork> _idleRunning = [];

    // Continuations that gave way to other sockets (Yield), run after the current batch of events. Loop thread only:
    // work from any other thread arrives through Post, never here directly.
    private List<Action> _ready = [];
    private List<Action> _readyRunning = [];

    // Work handed to this loop by other threads (Post): taken under _postGate, run on the loop's thread; the eventfd
    // wakes a loop asleep in epoll_wait. _wakeArmed keeps it to one write per sleep (cleared by the loop before it drains).
    private readonly Lock _postGate = new();
    private List<Action> _posted = [];
    private List<Action> _postedRunning = [];
    private readonly int _wakeFd;
    private int _wakeArmed;
    private const ulong WakeKey = ulong.MaxValue;

    [ThreadStatic]
    private static EventLoop? t_current;

    /// <summary>
    /// Whether loop-owned state is checked to be touched on its loop's thread only (the test project turns this switch
    /// on; a violation ends the process with a message, as a failed assertion would). Off in production: the checks cost
    /// a thread-static read each.
    /// </summary>
    internal static readonly bool CheckAffinity =
        AppContext.TryGetSwitch("NetSwap.EventLoop.CheckAffinity", out var check) && check;

    /// <summary>Fails the process when loop-owned state is touched from another thread (under <see cref="CheckAffinity"/>).</summary>
    public void AssertOnLoop(string what)
    {
        if (CheckAffinity && t_current != this)
        {
            Environment.FailFast($"netswapd: {what} used off its event loop's thread ({Environment.CurrentManagedThreadId})");
        }
    }

    /// <summary>
    /// Lets the other sockets of this loop have their turn: the caller continues on the loop's thread after the events
    /// already waiting have been handled. Safe from any thread: awaited off the loop (a continuation that resumed on the
    /// thread pool), it brings the caller back to the loop through <see cref="Post"/>, which wakes it.
    /// </summary>
    public YieldAwaitable Yield() => new(this);

    public readonly struct YieldAwaitable(EventLoop loop) : System.Runtime.CompilerServices.ICriticalNotifyCompletion
    {
        public YieldAwaitable GetAwaiter() => this;
        public bool IsCompleted => false;
        public void GetResult()
        {
        }

        public void OnCompleted(Action continuation) => loop.Schedule(continuation);
        public void UnsafeOnCompleted(Action continuation) => loop.Schedule(continuation);
    }

    /// <summary>Runs <paramref name="work"/> on this loop soon: after the current batch on the loop's thread, else by Post.</summary>
    public void Schedule(Action work)
    {
        if (t_current == this)
        {
            _ready.Add(work);
        }
        else
        {
            Post(work);
        }
    }

    /// <summary>
    /// Hands <paramref name="work"/> to this loop from another thread. The eventfd is level-triggered: once written it
    /// stays readable until <see cref="RunPosted"/> reads it, so a poster that finds the wake already armed knows the
    /// loop will drain the queue after its item is in (the loop disarms before it reads and swaps).
    /// </summary>
    private void Post(Action work)
    {
        lock (_postGate)
        {
            _posted.Add(work);
        }
        if (Interlocked.Exchange(ref _wakeArmed, 1) == 0)
        {
            ulong one = 1;
            // EAGAIN only when the counter is near overflow: then it is readable already.
            SocketCalls.Write(_wakeFd, &one, sizeof(ulong));
        }
    }

    private void RunPosted()
    {
        Volatile.Write(ref _wakeArmed, 0);
        ulong drained;
        SocketCalls.Read(_wakeFd, &drained, sizeof(ulong));
        lock (_postGate)
        {
            (_posted, _postedRunning) = (_postedRunning, _posted);
        }
        RunAll(_postedRunning);
    }

    private void RunReady()
    {
        AssertOnLoop("the ready list");
        (_ready, _readyRunning) = (_readyRunning, _ready);
        RunAll(_readyRunning);
    }

    private static void RunAll(List<Action> work)
    {
        foreach (var continuation in work)
        {
            try
            {
                continuation();
            }
            catch (Exception e)
            {
                ReportBug(e);
            }
        }
        work.Clear();
    }

    /// <summary>Whether the calling thread is this loop's thread.</summary>
    public bool IsCurrentThread => t_current == this;

    /// <summary>
    /// Has <paramref name="work"/> run on this loop's thread the next time it has nothing to do and is about to sleep
    /// (call it from the loop's thread; queue each piece of work once until it has run).
    /// </summary>
    public void WhenIdle(IIdleWork work)
    {
        AssertOnLoop("the idle-work list");
        _idleWork.Add(work);
    }

    private void RunIdleWork()
    {
        AssertOnLoop("the idle-work list");
        (_idleWork, _idleRunning) = (_idleRunning, _idleWork);
        foreach (var work in _idleRunning)
        {
            try
            {
                work.OnLoopIdle();
            }
            catch (Exception e)
            {
                ReportBug(e);
            }
        }
        _idleRunning.Clear();
    }

    /// <summary>
    /// Continuations and idle work catch their own exceptions; one reaching the loop is a bug. The loop serves other
    /// clients too, so it goes on, and says so where an administrator looks (stderr: the journal).
    /// </summary>
    private static void ReportBug(Exception e) => Console.Error.WriteLine($"netswapd: event loop: unexpected {e}");

    private struct Entry
    {
        public ReactorStream? Target;
        public uint Generation;
    }

    public EventLoop(int index, TimeSpan spin)
    {
        _epoll = SocketCalls.EpollCreate();
        if (_epoll < 0)
        {
            throw new IOException($"epoll_create1 failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        }
        _spinTicks = (long)(spin.TotalSeconds * Stopwatch.Frequency);
        _wakeFd = SocketCalls.CreateEventFd();
        var wake = new SocketCalls.EpollEvent { Events = SocketCalls.EpollIn, Data = WakeKey };
        if (_wakeFd < 0 || SocketCalls.EpollCtl(_epoll, SocketCalls.EpollCtlAdd, _wakeFd, &wake) < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            _ = SocketCalls.Close(_epoll);
            if (_wakeFd >= 0)
            {
                _ = SocketCalls.Close(_wakeFd);
            }
            throw new IOException($"eventfd for the event loop failed: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
        var thread = new Thread(Run, maxStackSize: 256 * 1024) { IsBackground = true, Name = $"netswap-io-{index}" };
        thread.UnsafeStart();
    }

    /// <summary>Adds a socket; its events go to <paramref name="target"/> until <see cref="Unregister"/>.</summary>
    public ulong Register(ReactorStream target, SafeHandle socket)
    {
        int slot;
        uint generation;
        lock (_gate)
        {
            slot = _free.Count > 0 ? _free.Pop() : _used++;
            if (slot == _entries.Length)
            {
                var larger = new Entry[_entries.Length * 2];
                _entries.CopyTo(larger, 0);
                _entries = larger;
            }
            generation = ++_entries[slot].Generation;
            _entries[slot].Target = target;
        }
        var key = (ulong)generation << 32 | (uint)slot;
        var ev = new SocketCalls.EpollEvent
        {
            Events = SocketCalls.EpollIn | SocketCalls.EpollOut | SocketCalls.EpollRdHup | SocketCalls.EpollEt,
            Data = key,
        };
        if (SocketCalls.EpollCtl(_epoll, SocketCalls.EpollCtlAdd, socket, &ev) < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            Free(key);
            throw new IOException($"epoll_ctl(ADD) failed: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
        return key;
    }

    /// <summary>Removes a socket (before it is closed). Events already collected for it are dropped by the key check.</summary>
    public void Unregister(ulong key, SafeHandle socket)
    {
        try
        {
            SocketCalls.EpollCtl(_epoll, SocketCalls.EpollCtlDel, socket, null);
        }
        catch (ObjectDisposedException)
        {
            // Already closed: closing took it out of the epoll set.
        }
        Free(key);
    }

    private void Free(ulong key)
    {
        var slot = (int)(uint)key;
        lock (_gate)
        {
            if (_entries[slot].Generation == (uint)(key >> 32) && _entries[slot].Target is not null)
            {
                _entries[slot].Target = null;
                _free.Push(slot);
            }
        }
    }

    private void Run()
    {
        var events = (SocketCalls.EpollEvent*)NativeMemory.Alloc(MaxEvents, (nuint)sizeof(SocketCalls.EpollEvent));
        var lastBusy = 0L;
        t_current = this;
        while (true)
        {
            var spinning = _ready.Count > 0 || (_spinTicks > 0 && Stopwatch.GetTimestamp() - lastBusy < _spinTicks);
            if (!spinning && _idleWork.Count > 0)
            {
                RunIdleWork();
            }
            var n = SocketCalls.EpollWait(_epoll, events, MaxEvents, spinning ? 0 : -1);
            if (n <= 0)
            {
                if (n < 0 && Marshal.GetLastPInvokeError() != SocketCalls.EINTR)
                {
                    Environment.FailFast($"epoll_wait failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
                }
                if (n == 0 && _ready.Count > 0)
                {
                    RunReady();
                    lastBusy = Stopwatch.GetTimestamp();
                }
                else if (n == 0)
                {
                    // Polling: let the client (often on this very core) run meanwhile.
                    Thread.Yield();
                }
                continue;
            }
            var entries = Volatile.Read(ref _entries);
            for (var i = 0; i < n; i++)
            {
                var key = events[i].Data;
                if (key == WakeKey)
                {
                    RunPosted();
                    continue;
                }
                var slot = (int)(uint)key;
                if (slot >= entries.Length)
                {
                    entries = Volatile.Read(ref _entries);
                }
                var entry = entries[slot];
                if (entry.Target is { } target && entry.Generation == (uint)(key >> 32))
                {
                    try
                    {
                        target.OnEvents(events[i].Events);
                    }
                    catch (Exception e)
                    {
                        ReportBug(e);
                    }
                }
            }
            if (_ready.Count > 0)
            {
                RunReady();
            }
            lastBusy = Stopwatch.GetTimestamp();
        }
    }
}

/// <summary>Work an <see cref="EventLoop"/> runs when it has nothing else to do.</summary>
internal interface IIdleWork
{
    void OnLoopIdle();
}

/// <summary>The event loops of the process, one per core, created on first use; sockets are spread over them in turn.</summary>
internal static class Reactor
{
    private static EventLoop[]? s_loops;
    private static int s_next;
    private static readonly Lock s_gate = new();

    public static EventLoop Next()
    {
        var loops = Volatile.Read(ref s_loops);
        if (loops is null)
        {
            lock (s_gate)
            {
                loops = s_loops ??= Enumerable.Range(0, Math.Clamp(Environment.ProcessorCount, 1, 16))
                    .Select(i => new EventLoop(i, EventLoop.SpinTime)).ToArray();
            }
        }
        return loops[(int)((uint)Interlocked.Increment(ref s_next) % (uint)loops.Length)];
    }
}
