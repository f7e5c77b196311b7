using NetSwap.Fuzz;

namespace NetSwap.Tests.Support;

/// <summary>
/// An in-memory export ("faulty") whose writes stop inside storage until released, as a disk that holds up a pwrite:
/// for tests of what a connection may and may not do while a request of its waits on storage.
/// </summary>
internal sealed class HeldStorage : IDisposable
{
    private readonly SemaphoreSlim _entered = new(0);
    private readonly ManualResetEventSlim _release = new();

    /// <summary>Each write waits until <see cref="Release"/> or for <paramref name="hold"/> at most.</summary>
    public HeldStorage(TimeSpan hold) =>
        Catalog = new MemoryExportCatalog(1 << 20, 1 << 20, 1 << 20, writesMayWait: true, onWrite: () =>
        {
            _entered.Release();
            _release.Wait(hold);
        });

    public MemoryExportCatalog Catalog { get; }

    /// <summary>Whether a write reached storage within 10 s.</summary>
    public Task<bool> EnteredAsync() => _entered.WaitAsync(TimeSpan.FromSeconds(10));

    public void Release() => _release.Set();

    public void Dispose()
    {
        _release.Set();
        Catalog.Dispose();
        _entered.Dispose();
        _release.Dispose();
    }
}
