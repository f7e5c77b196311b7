using NetSwap.Protocol.Swap;

namespace NetSwap.Tests.Protocol;

public class SwapNameAndHeaderTests
{
    [Theory]
    [InlineData("swap", null, null)]
    [InlineData("swap:256M", null, 256L << 20)]
    [InlineData("swap/lab-pc_07.a", "lab-pc_07.a", null)]
    [InlineData("swap/t:1G", "t", 1L << 30)]
    [InlineData("swap/t:65536", "t", 65536L)]
    public void ValidNames_Parse(string name, string? token, long? size)
    {
        Assert.True(SwapExportName.TryParse(name, out var parsed, out var problem), problem);
        Assert.Equal(new SwapExportName(token, size), parsed);
        Assert.True(SwapExportName.TryParse(parsed.ToString(), out var again, out _));
        Assert.Equal(parsed, again);
    }

    [Theory]
    [InlineData("swap/")]
    [InlineData("swap/../etc/passwd")]
    [InlineData("swap/a b")]
    [InlineData("swap/..")]
    [InlineData("swap/ä")]
    [InlineData("swap:")]
    [InlineData("swap:12Q")]
    [InlineData("swap:-5")]
    [InlineData("swap/x:abc")]
    public void MalformedNames_AreRefused(string name)
    {
        Assert.True(SwapExportName.IsSwapName(name));
        Assert.False(SwapExportName.TryParse(name, out _, out var problem));
        Assert.NotNull(problem);
    }

    [Fact]
    public void TokensLongerThan64_AreRefused()
    {
        Assert.True(SwapExportName.TryParse("swap/" + new string('a', 64), out _, out _));
        Assert.False(SwapExportName.TryParse("swap/" + new string('a', 65), out _, out _));
    }

    [Theory]
    [InlineData("disk")]
    [InlineData("swapfile")]
    [InlineData("")]
    public void OtherNames_AreNotSwapNames(string name) => Assert.False(SwapExportName.IsSwapName(name));

    [Fact]
    public void Header_RoundTrips_WithMkswapLayout()
    {
        var page = new byte[4096];
        var uuid = Guid.NewGuid();
        SwapHeader.Write(page, 512L << 20, uuid, "netswap");
        Assert.Equal("SWAPSPACE2"u8.ToArray(), page[4086..]);
        Assert.Equal(new byte[] { 1, 0, 0, 0 }, page[1024..1028]);
        Assert.Equal(BitConverter.GetBytes((uint)((512L << 20) / 4096 - 1)), page[1028..1032]);
        Assert.True(SwapHeader.TryRead(page, out var lastPage, out var readUuid, out var label));
        Assert.Equal(((512L << 20) / 4096) - 1, lastPage);
        Assert.Equal(uuid, readUuid);
        Assert.Equal("netswap", label);
        Assert.All(page[..1024], b => Assert.Equal(0, b));
        Assert.Throws<ArgumentOutOfRangeException>(() => SwapHeader.Write(page, 4096 * 9, uuid, "x"));
    }

    [Fact]
    public async Task Header_IsRecognisedByBlkid()
    {
        var path = Path.GetTempFileName();
        try
        {
            var page = new byte[4096];
            var uuid = Guid.NewGuid();
            SwapHeader.Write(page, 64L << 20, uuid, "netswap");
            await using (var file = File.OpenWrite(path))
            {
                await file.WriteAsync(page);
                file.SetLength(64L << 20);
            }
            var output = await Support.ExternalTool.RunOkAsync("blkid", "-p", "-o", "export", path);
            Assert.Contains("TYPE=swap", output);
            Assert.Contains("LABEL=netswap", output);
            Assert.Contains($"UUID={uuid}", output);
            Assert.Contains("VERSION=1", output);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
