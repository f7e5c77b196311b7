using NetSwap.Protocol.Nbd;

namespace NetSwap.Tests.Protocol;

/// <summary>Every message written and read back, and the exact bytes of the fixed layouts (doc/proto.md).</summary>
public class SerializeParseTests
{
    [Fact]
    public void NewstyleGreeting_RoundTrips_AndHasSpecLayout()
    {
        var bytes = new byte[NbdNewstyleGreeting.Size];
        new NbdNewstyleGreeting(NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes).Write(bytes);
        Assert.Equal("NBDMAGICIHAVEOPT"u8.ToArray(), bytes[..16]);
        Assert.Equal(new byte[] { 0, 3 }, bytes[16..]);
        Assert.True(NbdNewstyleGreeting.TryRead(bytes, out var parsed));
        Assert.Equal(NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes, parsed.Flags);
        Assert.False(NbdNewstyleGreeting.TryRead(bytes.AsSpan(0, 17), out _));
    }

    [Fact]
    public void OldstyleGreeting_RoundTrips()
    {
        var bytes = new byte[NbdOldstyleGreeting.Size];
        var message = new NbdOldstyleGreeting(1 << 29, NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush);
        message.Write(bytes);
        Assert.Equal(new byte[] { 0, 0, 0x42, 0x02, 0x81, 0x86, 0x12, 0x53 }, bytes[8..16]);
        Assert.All(bytes[28..], b => Assert.Equal(0, b));
        Assert.True(NbdOldstyleGreeting.TryRead(bytes, out var parsed));
        Assert.Equal(message, parsed);
    }

    [Fact]
    public void OptionHeader_RoundTrips_AndRejectsBadMagic()
    {
        var bytes = new byte[NbdOptionHeader.Size];
        new NbdOptionHeader(NbdOption.Go, 1234).Write(bytes);
        Assert.True(NbdOptionHeader.TryRead(bytes, out var parsed));
        Assert.Equal(new NbdOptionHeader(NbdOption.Go, 1234), parsed);
        bytes[0] ^= 1;
        Assert.Throws<NbdProtocolException>(() => NbdOptionHeader.TryRead(bytes, out _));
        Assert.False(NbdOptionHeader.TryRead(bytes.AsSpan(0, 15), out _));
    }

    [Fact]
    public void OptionReplyHeader_RoundTrips()
    {
        var bytes = new byte[NbdOptionReplyHeader.Size];
        var header = new NbdOptionReplyHeader(NbdOption.List, NbdOptionReplyType.ErrPolicy, 7);
        header.Write(bytes);
        Assert.Equal(new byte[] { 0, 3, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9 }, bytes[..8]);
        Assert.True(NbdOptionReplyHeader.TryRead(bytes, out var parsed));
        Assert.Equal(header, parsed);
        Assert.True(parsed.IsError);
    }

    [Theory]
    [InlineData(true, 10)]
    [InlineData(false, 134)]
    public void ExportNameReply_HonoursNoZeroes(bool noZeroes, int expectedLength)
    {
        var bytes = new byte[NbdExportNameReply.FullSize];
        var reply = new NbdExportNameReply(4096, NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.ReadOnly);
        Assert.Equal(expectedLength, reply.Write(bytes, noZeroes));
        Assert.True(NbdExportNameReply.TryRead(bytes, out var parsed));
        Assert.Equal(reply, parsed);
    }

    [Fact]
    public void InfoRequest_RoundTrips()
    {
        var request = new NbdInfoRequest("swap/ä-token", [NbdInfoType.Name, NbdInfoType.BlockSize]);
        var bytes = new byte[request.SerializedLength];
        Assert.Equal(bytes.Length, request.Write(bytes));
        Assert.True(NbdInfoRequest.TryParse(bytes, out var parsed, out var problem), problem);
        Assert.Equal(request.Name, parsed.Name);
        Assert.Equal(request.Requests, parsed.Requests);
    }

    [Theory]
    [InlineData(new byte[] { 0, 0, 0 })]                                  // shorter than 6
    [InlineData(new byte[] { 0, 0, 0, 9, (byte)'a', 0, 0 })]              // name longer than data
    [InlineData(new byte[] { 0, 0, 0, 1, (byte)'a', 0, 2, 0, 1 })]        // 2 requests announced, 1 present
    [InlineData(new byte[] { 0, 0, 0, 1, (byte)'a', 0, 0, 0 })]           // trailing byte
    [InlineData(new byte[] { 0, 0, 0, 1, 0, 0, 0 })]                      // NUL in name
    [InlineData(new byte[] { 0, 0, 0, 1, 0xff, 0, 0 })]                   // not UTF-8
    public void InfoRequest_RejectsInconsistentLengths(byte[] data)
    {
        Assert.False(NbdInfoRequest.TryParse(data, out _, out var problem));
        Assert.NotNull(problem);
    }

    [Fact]
    public void InfoReplies_RoundTrip()
    {
        var bytes = new byte[64];
        Assert.Equal(12, NbdInfoReply.WriteExport(bytes, 1UL << 40, NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.CanMultiConn));
        Assert.True(NbdInfoReply.TryReadExport(bytes.AsSpan(0, 12), out var size, out var flags));
        Assert.Equal(1UL << 40, size);
        Assert.Equal(NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.CanMultiConn, flags);

        Assert.Equal(14, NbdInfoReply.WriteBlockSize(bytes, 1, 4096, 32 << 20));
        Assert.True(NbdInfoReply.TryReadBlockSize(bytes.AsSpan(0, 14), out var min, out var pref, out var max));
        Assert.Equal((1u, 4096u, 32u << 20), (min, pref, max));

        var n = NbdInfoReply.WriteString(bytes, NbdInfoType.Description, "lab swap");
        Assert.True(NbdInfoReply.TryReadString(bytes.AsSpan(0, n), NbdInfoType.Description, out var text));
        Assert.Equal("lab swap", text);
        Assert.False(NbdInfoReply.TryReadString(bytes.AsSpan(0, n), NbdInfoType.Name, out _));
    }

    [Fact]
    public void ServerReply_RoundTrips()
    {
        var bytes = new byte[NbdServerReply.Size("disk", "details")];
        NbdServerReply.Write(bytes, "disk", "details");
        Assert.True(NbdServerReply.TryRead(bytes, out var name, out var details));
        Assert.Equal(("disk", "details"), (name, details));
    }

    [Fact]
    public void Request_RoundTrips_AndHasSpecLayout()
    {
        var bytes = new byte[NbdRequest.Size];
        var request = new NbdRequest(NbdCommandFlags.Fua | NbdCommandFlags.NoHole, NbdCommand.WriteZeroes, 0x0102030405060708, 1UL << 33, 65536);
        request.Write(bytes);
        Assert.Equal(new byte[] { 0x25, 0x60, 0x95, 0x13, 0, 3, 0, 6, 1, 2, 3, 4, 5, 6, 7, 8 }, bytes[..16]);
        Assert.True(NbdRequest.TryRead(bytes, out var parsed));
        Assert.Equal(request, parsed);
        Assert.False(NbdRequest.TryRead(bytes.AsSpan(0, 27), out _));
        bytes[3] = 0;
        Assert.Throws<NbdProtocolException>(() => NbdRequest.TryRead(bytes, out _));
    }

    [Fact]
    public void SimpleReply_RoundTrips()
    {
        var bytes = new byte[NbdSimpleReply.Size];
        new NbdSimpleReply(NbdError.NoSpc, 42).Write(bytes);
        Assert.Equal(new byte[] { 0x67, 0x44, 0x66, 0x98, 0, 0, 0, 28 }, bytes[..8]);
        Assert.True(NbdSimpleReply.TryRead(bytes, out var parsed));
        Assert.Equal(new NbdSimpleReply(NbdError.NoSpc, 42), parsed);
    }

    [Fact]
    public void StructuredChunks_RoundTrip()
    {
        var bytes = new byte[NbdStructuredReplyHeader.Size];
        var header = new NbdStructuredReplyHeader(NbdReplyFlags.Done, NbdReplyType.Error, 9, 30);
        header.Write(bytes);
        Assert.True(NbdStructuredReplyHeader.TryRead(bytes, out var parsed));
        Assert.Equal(header, parsed);
        Assert.True(parsed.IsError);

        var hole = new byte[NbdChunk.OffsetHoleSize];
        NbdChunk.WriteOffsetHole(hole, 8192, 4096);
        Assert.True(NbdChunk.TryReadOffsetHole(hole, out var offset, out var length));
        Assert.Equal((8192UL, 4096u), (offset, length));

        var error = new byte[NbdChunk.ErrorSize("disk full")];
        NbdChunk.WriteError(error, NbdError.NoSpc, "disk full");
        Assert.True(NbdChunk.TryReadError(error, out var code, out var message));
        Assert.Equal((NbdError.NoSpc, "disk full"), (code, message));
        error[5] = 200; // message length beyond the payload
        Assert.False(NbdChunk.TryReadError(error, out _, out _));
    }

    [Fact]
    public void Strings_AreTruncatedOnCharacterBoundaries()
    {
        var text = new string('ä', 3000); // 6000 UTF-8 bytes
        var truncated = NbdStrings.Truncate(text);
        Assert.True(System.Text.Encoding.UTF8.GetByteCount(truncated) <= NbdLimits.MaxStringLength);
        Assert.Equal(2048, truncated.Length);
        Assert.Equal("short", NbdStrings.Truncate("short"));
    }

    [Fact]
    public void MetaContextRequest_RoundTrips_AndEveryTruncationIsInvalid()
    {
        var request = new NbdMetaContextRequest("disk", ["base:allocation", "x-öffnen:ä"]);
        var data = new byte[request.SerializedLength];
        Assert.Equal(data.Length, request.Write(data));
        Assert.True(NbdMetaContextRequest.TryParse(data, out var parsed, out _, out _));
        Assert.Equal("disk", parsed.ExportName);
        Assert.Equal(request.Queries, parsed.Queries);
        for (var length = 0; length < data.Length; length++)
        {
            Assert.False(NbdMetaContextRequest.TryParse(data.AsSpan(0, length), out _, out var problem, out var tooBig));
            Assert.False(tooBig);
            Assert.NotNull(problem);
        }
        var many = new NbdMetaContextRequest("", [.. Enumerable.Repeat("q", NbdMetaContextRequest.MaxQueries + 1)]);
        var manyData = new byte[many.SerializedLength];
        many.Write(manyData);
        Assert.False(NbdMetaContextRequest.TryParse(manyData, out _, out _, out var isTooBig));
        Assert.True(isTooBig);
        Assert.True(NbdMetaContexts.Matches("base:allocation", listing: false));
        Assert.False(NbdMetaContexts.Matches("base:", listing: false));
        Assert.True(NbdMetaContexts.Matches("base:", listing: true));
        Assert.False(NbdMetaContexts.Matches("base:allocation2", listing: true));
    }

    [Fact]
    public void BlockStatusChunk_RoundTrips_AndRejectsZeroLengths()
    {
        NbdBlockDescriptor[] extents = [new(4096, NbdAllocationFlags.Hole | NbdAllocationFlags.Zero), new(1 << 20, NbdAllocationFlags.None)];
        var payload = new byte[NbdBlockStatusChunk.Size(extents.Length)];
        Assert.Equal(payload.Length, NbdBlockStatusChunk.Write(payload, 7, extents));
        Assert.True(NbdBlockStatusChunk.TryRead(payload, out var context, out var read));
        Assert.Equal(7u, context);
        Assert.Equal(extents, read);
        Assert.False(NbdBlockStatusChunk.TryRead(payload.AsSpan(0, 4), out _, out _));
        Assert.False(NbdBlockStatusChunk.TryRead(payload.AsSpan(0, 10), out _, out _));
        payload[4] = payload[5] = payload[6] = payload[7] = 0;
        Assert.False(NbdBlockStatusChunk.TryRead(payload, out _, out _));
    }
}
