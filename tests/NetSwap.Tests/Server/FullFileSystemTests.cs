using NetSwap.Protocol.Nbd;
using NetSwap.Server.Exports;
using NetSwap.Tests.Support;

namespace NetSwap.Tests.Server;

/// <summary>A sparse export on a file system that fills up: the client gets ENOSPC, nothing breaks.</summary>
public class FullFileSystemTests
{
    private const int MiB = 1024 * 1024;

    [Fact]
    public async Task WritesPastAFullFileSystem_GetEnospc_AndTheConnectionAndOthersCarryOn()
    {
        await using var fs = await TmpfsMount.CreateAsync(2 * MiB);
        var path = Path.Combine(fs.Path, "sparse.img");
        using (var file = File.Create(path))
        {
            file.SetLength(16 * MiB);   // 16 MiB of holes on a 2 MiB file system
        }
        await using var server = ServerHarness.Start(new FileExportCatalog([new ExportDefinition("sparse", path, false, null)], null));
        await using var client = await server.ConnectAsync();
        await client.StartAsync();
        await client.GoAsync("sparse");
        var block = new byte[256 * 1024];
        Array.Fill(block, (byte)0x5a);

        // Small writes (inline on the event loop) and large ones (streamed) alike, until the file system is full.
        var written = 0;
        var error = NbdError.None;
        for (var i = 0; i < 64 && error == NbdError.None; i++)
        {
            var length = i % 2 == 0 ? 4096 : block.Length;
            error = (await client.RequestAsync(NbdCommand.Write, (ulong)i * (ulong)block.Length, (uint)length, payload: block.AsMemory(0, length))).Error;
            written += error == NbdError.None ? 1 : 0;
        }
        Assert.Equal(NbdError.NoSpc, error);
        Assert.InRange(written, 2, 20);
        Assert.True(await server.Log.WaitForAsync("errno 28"), string.Join("\n", server.Log.Lines));

        // The same connection still serves: what was written reads back, and once space is freed writes work again.
        var read = await client.RequestAsync(NbdCommand.Read, (ulong)block.Length, (uint)block.Length);
        Assert.Equal(NbdError.None, read.Error);
        Assert.Equal(block, read.Data);
        Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Trim, 0, (uint)(written * block.Length))).Error);
        Assert.Equal(NbdError.None, (await client.RequestAsync(NbdCommand.Write, 0, 4096, payload: block.AsMemory(0, 4096))).Error);

        // And so does another client.
        await using var other = await server.ConnectAsync();
        await other.StartAsync();
        await other.GoAsync("sparse");
        Assert.Equal(NbdError.None, (await other.RequestAsync(NbdCommand.Read, 0, 4096)).Error);
    }
}
