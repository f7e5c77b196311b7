using System.Buffers.Binary;
using System.Text;

namespace NetSwap.Protocol.Nbd;

/// <summary>
/// A transmission request; a WRITE is followed by <see cref="Length"/> bytes of data.
/// <code>
/// 0       4       6      8        16       24       28
/// +-------+-------+------+--------+--------+--------+
/// | magic | flags | type | cookie | offset | length |
/// +-------+-------+------+--------+--------+--------+
/// </code>
/// </summary>
public readonly record struct NbdRequest(NbdCommandFlags Flags, NbdCommand Command, ulong Cookie, ulong Offset, uint Length)
{
    public const int Size = 28;

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.Request);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], (ushort)Flags);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)Command);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], Cookie);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], Offset);
        BinaryPrimitives.WriteUInt32BigEndian(destination[24..], Length);
    }

    /// <summary>Returns false when fewer than 28 bytes are given; a bad magic is broken framing and throws.</summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out NbdRequest request)
    {
        request = default;
        if (source.Length < Size)
        {
            return false;
        }
        if (BinaryPrimitives.ReadUInt32BigEndian(source) != NbdMagic.Request)
        {
            NbdProtocolException.Throw($"bad request magic 0x{BinaryPrimitives.ReadUInt32BigEndian(source):x8}");
        }
        request = new NbdRequest(
            (NbdCommandFlags)BinaryPrimitives.ReadUInt16BigEndian(source[4..]),
            (NbdCommand)BinaryPrimitives.ReadUInt16BigEndian(source[6..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[8..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[16..]),
            BinaryPrimitives.ReadUInt32BigEndian(source[24..]));
        return true;
    }
}

/// <summary>
/// Simple reply; a successful READ's data follows it.
/// <code>
/// 0       4       8        16
/// +-------+-------+--------+
/// | magic | error | cookie |
/// +-------+-------+--------+
/// </code>
/// </summary>
public readonly record struct NbdSimpleReply(NbdError Error, ulong Cookie)
{
    public const int Size = 16;

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.SimpleReply);
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], (uint)Error);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], Cookie);
    }

    public static bool TryRead(ReadOnlySpan<byte> source, out NbdSimpleReply reply)
    {
        reply = default;
        if (source.Length < Size)
        {
            return false;
        }
        if (BinaryPrimitives.ReadUInt32BigEndian(source) != NbdMagic.SimpleReply)
        {
            NbdProtocolException.Throw("bad simple reply magic");
        }
        reply = new NbdSimpleReply((NbdError)BinaryPrimitives.ReadUInt32BigEndian(source[4..]), BinaryPrimitives.ReadUInt64BigEndian(source[8..]));
        return true;
    }
}

/// <summary>
/// Structured reply chunk header; <see cref="Length"/> bytes of payload follow.
/// <code>
/// 0       4       6      8        16       20
/// +-------+-------+------+--------+--------+
/// | magic | flags | type | cookie | length |
/// +-------+-------+------+--------+--------+
/// </code>
/// </summary>
public readonly record struct NbdStructuredReplyHeader(NbdReplyFlags Flags, NbdReplyType Type, ulong Cookie, uint Length)
{
    public const int Size = 20;

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.StructuredReply);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], (ushort)Flags);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)Type);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], Cookie);
        BinaryPrimitives.WriteUInt32BigEndian(destination[16..], Length);
    }

    public static bool TryRead(ReadOnlySpan<byte> source, out NbdStructuredReplyHeader header)
    {
        header = default;
        if (source.Length < Size)
        {
            return false;
        }
        if (BinaryPrimitives.ReadUInt32BigEndian(source) != NbdMagic.StructuredReply)
        {
            NbdProtocolException.Throw("bad structured reply magic");
        }
        header = new NbdStructuredReplyHeader(
            (NbdReplyFlags)BinaryPrimitives.ReadUInt16BigEndian(source[4..]),
            (NbdReplyType)BinaryPrimitives.ReadUInt16BigEndian(source[6..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[8..]),
            BinaryPrimitives.ReadUInt32BigEndian(source[16..]));
        return true;
    }

    public bool IsError => ((ushort)Type & 0x8000) != 0;
}

/// <summary>Payloads of structured reply chunks (spec, "Structured reply types").</summary>
public static class NbdChunk
{
    /// <summary>NBD_REPLY_TYPE_OFFSET_DATA starts with the 64-bit offset; the data follows.</summary>
    public const int OffsetDataPrefixSize = 8;
    /// <summary>NBD_REPLY_TYPE_OFFSET_HOLE: offset(8) hole size(4).</summary>
    public const int OffsetHoleSize = 12;
    /// <summary>NBD_REPLY_TYPE_ERROR: error(4) message length(2) message.</summary>
    public const int ErrorPrefixSize = 6;

    public static void WriteOffsetDataPrefix(Span<byte> destination, ulong offset) =>
        BinaryPrimitives.WriteUInt64BigEndian(destination, offset);

    public static void WriteOffsetHole(Span<byte> destination, ulong offset, uint length)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, offset);
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], length);
    }

    public static bool TryReadOffsetHole(ReadOnlySpan<byte> payload, out ulong offset, out uint length)
    {
        offset = 0;
        length = 0;
        if (payload.Length != OffsetHoleSize)
        {
            return false;
        }
        offset = BinaryPrimitives.ReadUInt64BigEndian(payload);
        length = BinaryPrimitives.ReadUInt32BigEndian(payload[8..]);
        return length != 0;
    }

    public static int ErrorSize(string message) => ErrorPrefixSize + Encoding.UTF8.GetByteCount(message);

    public static int WriteError(Span<byte> destination, NbdError error, string message)
    {
        var length = Encoding.UTF8.GetBytes(message, destination[ErrorPrefixSize..]);
        BinaryPrimitives.WriteUInt32BigEndian(destination, (uint)error);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], (ushort)length);
        return ErrorPrefixSize + length;
    }

    public static bool TryReadError(ReadOnlySpan<byte> payload, out NbdError error, out string message)
    {
        error = 0;
        message = string.Empty;
        if (payload.Length < ErrorPrefixSize)
        {
            return false;
        }
        error = (NbdError)BinaryPrimitives.ReadUInt32BigEndian(payload);
        var length = BinaryPrimitives.ReadUInt16BigEndian(payload[4..]);
        return length <= payload.Length - ErrorPrefixSize
            && NbdStrings.TryDecode(payload.Slice(ErrorPrefixSize, length), out message)
            && error != NbdError.None;
    }
}
