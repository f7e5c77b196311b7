using Microsoft.Win32.SafeHandles;
using NetSwap.Server.Exports.Swap;

namespace NetSwap.Tests.Swap;

/// <summary>
/// Which parts of a swap area were ever written: what tells the request loop that a large write would allocate pages
/// (and so goes off the event loop). Chunks are 128 KiB; a write marks every chunk it touches, a punched hole clears
/// only the chunks wholly inside it, and a fallocated (reserve) area is written everywhere from the start.
/// </summary>
public sealed class SwapAreaChunkTests : IDisposable
{
    private const long Chunk = 128 * 1024;
    private readonly string _path = Path.Combine(Path.GetTempPath(), $"netswap-chunks-{Guid.NewGuid():N}");
    private readonly SafeFileHandle _handle;

    public SwapAreaChunkTests() => _handle = File.OpenHandle(_path, FileMode.CreateNew, FileAccess.ReadWrite);

    public void Dispose()
    {
        _handle.Dispose();
        File.Delete(_path);
    }

    private SwapArea Area(long size, long reserved = 0) => new(1, "swap", null, null, "test", size, _handle, reserved);

    [Fact]
    public void ASparseArea_MayAllocateEverywhere_UntilWritten()
    {
        var area = Area(16 * Chunk);
        Assert.True(area.MayAllocate(0, Chunk));
        Assert.True(area.MayAllocate(15 * Chunk, Chunk));
        area.MarkWritten(0, 4096);
        Assert.False(area.MayAllocate(0, Chunk));
        Assert.False(area.MayAllocate(Chunk - 4096, 4096));
        // A range that reaches into a chunk never written still may allocate.
        Assert.True(area.MayAllocate(Chunk - 4096, 8192));
        Assert.True(area.MayAllocate(Chunk, Chunk));
        area.MarkWritten(Chunk, Chunk);
        Assert.False(area.MayAllocate(0, 2 * Chunk));
    }

    [Fact]
    public void APunchedHole_ClearsOnlyTheChunksWhollyInsideIt()
    {
        var area = Area(4 * Chunk);
        area.MarkWritten(0, 4 * Chunk);
        area.MarkPunched(4096, Chunk);
        Assert.False(area.MayAllocate(0, 2 * Chunk));
        area.MarkPunched(Chunk, 2 * Chunk);
        Assert.False(area.MayAllocate(0, Chunk));
        Assert.True(area.MayAllocate(Chunk, Chunk));
        Assert.True(area.MayAllocate(2 * Chunk, Chunk));
        Assert.False(area.MayAllocate(3 * Chunk, Chunk));
    }

    [Fact]
    public void AFallocatedArea_NeverAllocates()
    {
        var area = Area(64 * Chunk, reserved: 64 * Chunk);
        Assert.False(area.MayAllocate(0, 64 * Chunk));
    }

    [Fact]
    public void TheLastChunk_OfAnAreaThatIsNotAWholeNumberOfChunks_IsTracked()
    {
        // 65 chunks and a page: two words of bits, the last chunk partial.
        var size = 65 * Chunk + 4096;
        var area = Area(size);
        Assert.True(area.MayAllocate(size - 4096, 4096));
        area.MarkWritten(size - 4096, 4096);
        Assert.False(area.MayAllocate(size - 4096, 4096));
        Assert.True(area.MayAllocate(64 * Chunk, 4096));
        // A hole over the whole area: every chunk wholly inside it is empty again; the partial last one stays marked.
        area.MarkPunched(0, size);
        Assert.True(area.MayAllocate(0, Chunk));
        Assert.False(area.MayAllocate(size - 4096, 4096));
    }
}
