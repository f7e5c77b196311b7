using System.Buffers.Binary;
using System.Text;

namespace NetSwap.Protocol.Nbd;

/// <summary>
/// Server greeting of the (fixed) newstyle handshake.
/// <code>
/// 0        8        16    18
/// +--------+--------+-----+
/// |NBDMAGIC|IHAVEOPT|flags|
/// +--------+--------+-----+
/// </code>
/// </summary>
public readonly record struct NbdNewstyleGreeting(NbdHandshakeFlags Flags)
{
    public const int Size = 18;

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, NbdMagic.InitPasswd);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], NbdMagic.IHaveOpt);
        BinaryPrimitives.WriteUInt16BigEndian(destination[16..], (ushort)Flags);
    }

    /// <summary>Returns false when the bytes are incomplete; throws <see cref="NbdProtocolException"/> on a bad magic.</summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out NbdNewstyleGreeting greeting)
    {
        greeting = default;
        if (source.Length < Size)
        {
            return false;
        }
        if (BinaryPrimitives.ReadUInt64BigEndian(source) != NbdMagic.InitPasswd
            || BinaryPrimitives.ReadUInt64BigEndian(source[8..]) != NbdMagic.IHaveOpt)
        {
            NbdProtocolException.Throw("not a newstyle NBD greeting");
        }
        greeting = new NbdNewstyleGreeting((NbdHandshakeFlags)BinaryPrimitives.ReadUInt16BigEndian(source[16..]));
        return true;
    }
}

/// <summary>
/// Server greeting of the oldstyle handshake (nbd-client before 3.10): the export is fixed, nothing is negotiated.
/// <code>
/// 0        8        16     24      28          152
/// +--------+--------+------+-------+-----------+
/// |NBDMAGIC|cliserv | size | flags | 124 zeros |
/// +--------+--------+------+-------+-----------+
/// </code>
/// </summary>
public readonly record struct NbdOldstyleGreeting(ulong ExportSize, NbdTransmissionFlags Flags)
{
    public const int Size = 152;

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, NbdMagic.InitPasswd);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], NbdMagic.OldstyleCliserv);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], ExportSize);
        // The oldstyle flags field is 32 bits: the high 16 are handshake flags, which oldstyle MUST leave clear.
        BinaryPrimitives.WriteUInt32BigEndian(destination[24..], (uint)Flags);
        destination[28..Size].Clear();
    }

    public static bool TryRead(ReadOnlySpan<byte> source, out NbdOldstyleGreeting greeting)
    {
        greeting = default;
        if (source.Length < Size)
        {
            return false;
        }
        if (BinaryPrimitives.ReadUInt64BigEndian(source) != NbdMagic.InitPasswd
            || BinaryPrimitives.ReadUInt64BigEndian(source[8..]) != NbdMagic.OldstyleCliserv)
        {
            NbdProtocolException.Throw("not an oldstyle NBD greeting");
        }
        greeting = new NbdOldstyleGreeting(
            BinaryPrimitives.ReadUInt64BigEndian(source[16..]),
            (NbdTransmissionFlags)BinaryPrimitives.ReadUInt32BigEndian(source[24..]));
        return true;
    }
}

/// <summary>
/// Option request header sent by the client during option haggling; <see cref="Length"/> bytes of data follow.
/// <code>
/// 0        8        12       16
/// +--------+--------+--------+
/// |IHAVEOPT| option | length |
/// +--------+--------+--------+
/// </code>
/// </summary>
public readonly record struct NbdOptionHeader(NbdOption Option, uint Length)
{
    public const int Size = 16;

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, NbdMagic.IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], (uint)Option);
        BinaryPrimitives.WriteUInt32BigEndian(destination[12..], Length);
    }

    public static bool TryRead(ReadOnlySpan<byte> source, out NbdOptionHeader header)
    {
        header = default;
        if (source.Length < Size)
        {
            return false;
        }
        if (BinaryPrimitives.ReadUInt64BigEndian(source) != NbdMagic.IHaveOpt)
        {
            NbdProtocolException.Throw("option request without IHAVEOPT magic");
        }
        header = new NbdOptionHeader(
            (NbdOption)BinaryPrimitives.ReadUInt32BigEndian(source[8..]),
            BinaryPrimitives.ReadUInt32BigEndian(source[12..]));
        return true;
    }
}

/// <summary>
/// Option reply header (fixed newstyle); <see cref="Length"/> bytes of data follow.
/// <code>
/// 0        8        12     16       20
/// +--------+--------+------+--------+
/// | magic  | option | type | length |
/// +--------+--------+------+--------+
/// </code>
/// </summary>
public readonly record struct NbdOptionReplyHeader(NbdOption Option, NbdOptionReplyType Type, uint Length)
{
    public const int Size = 20;

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, NbdMagic.OptionReply);
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], (uint)Option);
        BinaryPrimitives.WriteUInt32BigEndian(destination[12..], (uint)Type);
        BinaryPrimitives.WriteUInt32BigEndian(destination[16..], Length);
    }

    public static bool TryRead(ReadOnlySpan<byte> source, out NbdOptionReplyHeader header)
    {
        header = default;
        if (source.Length < Size)
        {
            return false;
        }
        if (BinaryPrimitives.ReadUInt64BigEndian(source) != NbdMagic.OptionReply)
        {
            NbdProtocolException.Throw("option reply without reply magic");
        }
        header = new NbdOptionReplyHeader(
            (NbdOption)BinaryPrimitives.ReadUInt32BigEndian(source[8..]),
            (NbdOptionReplyType)BinaryPrimitives.ReadUInt32BigEndian(source[12..]),
            BinaryPrimitives.ReadUInt32BigEndian(source[16..]));
        return true;
    }

    public bool IsError => ((uint)Type & 0x8000_0000) != 0;
}

/// <summary>
/// The server's answer to NBD_OPT_EXPORT_NAME: size and flags, then 124 zero bytes unless NO_ZEROES was agreed.
/// <code>
/// 0      8       10           (134)
/// +------+-------+------------+
/// | size | flags | [124 zero] |
/// +------+-------+------------+
/// </code>
/// </summary>
public readonly record struct NbdExportNameReply(ulong ExportSize, NbdTransmissionFlags Flags)
{
    public const int ShortSize = 10;
    public const int FullSize = ShortSize + 124;

    public int Write(Span<byte> destination, bool noZeroes)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, ExportSize);
        BinaryPrimitives.WriteUInt16BigEndian(destination[8..], (ushort)Flags);
        if (noZeroes)
        {
            return ShortSize;
        }
        destination[ShortSize..FullSize].Clear();
        return FullSize;
    }

    public static bool TryRead(ReadOnlySpan<byte> source, out NbdExportNameReply reply)
    {
        reply = default;
        if (source.Length < ShortSize)
        {
            return false;
        }
        reply = new NbdExportNameReply(
            BinaryPrimitives.ReadUInt64BigEndian(source),
            (NbdTransmissionFlags)BinaryPrimitives.ReadUInt16BigEndian(source[8..]));
        return true;
    }
}

/// <summary>
/// Data of NBD_OPT_INFO and NBD_OPT_GO.
/// <code>
/// 0         4              4+n        6+n
/// +---------+--------------+----------+----------------+
/// | namelen | name (n)     | nrequest | info type x nr |
/// +---------+--------------+----------+----------------+
/// </code>
/// </summary>
public readonly record struct NbdInfoRequest(string Name, NbdInfoType[] Requests)
{
    public int SerializedLength => 4 + Encoding.UTF8.GetByteCount(Name) + 2 + (2 * Requests.Length);

    public int Write(Span<byte> destination)
    {
        var nameLength = Encoding.UTF8.GetBytes(Name, destination[4..]);
        BinaryPrimitives.WriteUInt32BigEndian(destination, (uint)nameLength);
        var position = 4 + nameLength;
        BinaryPrimitives.WriteUInt16BigEndian(destination[position..], (ushort)Requests.Length);
        position += 2;
        foreach (var type in Requests)
        {
            BinaryPrimitives.WriteUInt16BigEndian(destination[position..], (ushort)type);
            position += 2;
        }
        return position;
    }

    /// <summary>Parses the whole option data; false (NBD_REP_ERR_INVALID) when the lengths do not add up exactly.</summary>
    public static bool TryParse(ReadOnlySpan<byte> data, out NbdInfoRequest request, out string? problem)
    {
        request = default;
        if (data.Length < 6)
        {
            problem = "option data shorter than 6 bytes";
            return false;
        }
        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameLength > NbdLimits.MaxStringLength)
        {
            problem = $"export name of {nameLength} bytes is longer than the {NbdLimits.MaxStringLength} bytes allowed";
            return false;
        }
        if (nameLength > (uint)(data.Length - 6))
        {
            problem = $"export name length {nameLength} does not fit the option data";
            return false;
        }
        if (!NbdStrings.TryDecode(data.Slice(4, (int)nameLength), out var name))
        {
            problem = "export name is not valid UTF-8 or contains NUL";
            return false;
        }
        var rest = data[(4 + (int)nameLength)..];
        var count = BinaryPrimitives.ReadUInt16BigEndian(rest);
        if (rest.Length != 2 + (2 * count))
        {
            problem = $"{count} information requests do not match the option length";
            return false;
        }
        var requests = new NbdInfoType[count];
        for (var i = 0; i < count; i++)
        {
            requests[i] = (NbdInfoType)BinaryPrimitives.ReadUInt16BigEndian(rest[(2 + (2 * i))..]);
        }
        request = new NbdInfoRequest(name, requests);
        problem = null;
        return true;
    }
}

/// <summary>Writers and readers of the NBD_REP_INFO payloads.</summary>
public static class NbdInfoReply
{
    /// <summary>NBD_INFO_EXPORT: type(2) size(8) transmission flags(2).</summary>
    public const int ExportSize = 12;
    /// <summary>NBD_INFO_BLOCK_SIZE: type(2) minimum(4) preferred(4) maximum(4).</summary>
    public const int BlockSizeSize = 14;

    public static int WriteExport(Span<byte> destination, ulong size, NbdTransmissionFlags flags)
    {
        BinaryPrimitives.WriteUInt16BigEndian(destination, (ushort)NbdInfoType.Export);
        BinaryPrimitives.WriteUInt64BigEndian(destination[2..], size);
        BinaryPrimitives.WriteUInt16BigEndian(destination[10..], (ushort)flags);
        return ExportSize;
    }

    public static int WriteBlockSize(Span<byte> destination, uint minimum, uint preferred, uint maximum)
    {
        BinaryPrimitives.WriteUInt16BigEndian(destination, (ushort)NbdInfoType.BlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(destination[2..], minimum);
        BinaryPrimitives.WriteUInt32BigEndian(destination[6..], preferred);
        BinaryPrimitives.WriteUInt32BigEndian(destination[10..], maximum);
        return BlockSizeSize;
    }

    /// <summary>NBD_INFO_NAME or NBD_INFO_DESCRIPTION: type(2) then the string.</summary>
    public static int WriteString(Span<byte> destination, NbdInfoType type, string value)
    {
        BinaryPrimitives.WriteUInt16BigEndian(destination, (ushort)type);
        return 2 + Encoding.UTF8.GetBytes(value, destination[2..]);
    }

    public static int StringSize(string value) => 2 + Encoding.UTF8.GetByteCount(value);

    public static NbdInfoType ReadType(ReadOnlySpan<byte> payload) => (NbdInfoType)BinaryPrimitives.ReadUInt16BigEndian(payload);

    public static bool TryReadExport(ReadOnlySpan<byte> payload, out ulong size, out NbdTransmissionFlags flags)
    {
        size = 0;
        flags = 0;
        if (payload.Length != ExportSize || ReadType(payload) != NbdInfoType.Export)
        {
            return false;
        }
        size = BinaryPrimitives.ReadUInt64BigEndian(payload[2..]);
        flags = (NbdTransmissionFlags)BinaryPrimitives.ReadUInt16BigEndian(payload[10..]);
        return true;
    }

    public static bool TryReadBlockSize(ReadOnlySpan<byte> payload, out uint minimum, out uint preferred, out uint maximum)
    {
        minimum = preferred = maximum = 0;
        if (payload.Length != BlockSizeSize || ReadType(payload) != NbdInfoType.BlockSize)
        {
            return false;
        }
        minimum = BinaryPrimitives.ReadUInt32BigEndian(payload[2..]);
        preferred = BinaryPrimitives.ReadUInt32BigEndian(payload[6..]);
        maximum = BinaryPrimitives.ReadUInt32BigEndian(payload[10..]);
        return true;
    }

    public static bool TryReadString(ReadOnlySpan<byte> payload, NbdInfoType type, out string value)
    {
        value = string.Empty;
        return payload.Length >= 2 && ReadType(payload) == type && NbdStrings.TryDecode(payload[2..], out value);
    }
}

/// <summary>NBD_REP_SERVER payload: namelen(4) name [human-readable details].</summary>
public static class NbdServerReply
{
    public static int Size(string name, string? details) =>
        4 + Encoding.UTF8.GetByteCount(name) + (details is null ? 0 : Encoding.UTF8.GetByteCount(details));

    public static int Write(Span<byte> destination, string name, string? details)
    {
        var nameLength = Encoding.UTF8.GetBytes(name, destination[4..]);
        BinaryPrimitives.WriteUInt32BigEndian(destination, (uint)nameLength);
        var position = 4 + nameLength;
        if (details is not null)
        {
            position += Encoding.UTF8.GetBytes(details, destination[position..]);
        }
        return position;
    }

    public static bool TryRead(ReadOnlySpan<byte> payload, out string name, out string details)
    {
        name = details = string.Empty;
        if (payload.Length < 4)
        {
            return false;
        }
        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(payload);
        if (nameLength > (uint)(payload.Length - 4))
        {
            return false;
        }
        return NbdStrings.TryDecode(payload.Slice(4, (int)nameLength), out name)
            && NbdStrings.TryDecode(payload[(4 + (int)nameLength)..], out details);
    }
}

public static class NbdStrings
{
    private static readonly UTF8Encoding s_strictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>A protocol string: valid UTF-8, no NUL, at most 4096 bytes (spec, Conventions).</summary>
    public static bool TryDecode(ReadOnlySpan<byte> bytes, out string value)
    {
        value = string.Empty;
        if (bytes.Length > NbdLimits.MaxStringLength || bytes.Contains((byte)0))
        {
            return false;
        }
        try
        {
            value = s_strictUtf8.GetString(bytes);
            return true;
        }
        catch (DecoderFallbackException)
        {
            return false;
        }
    }

    /// <summary>Cuts a message to what fits in a protocol string without splitting a UTF-8 sequence.</summary>
    public static string Truncate(string message, int maxBytes = NbdLimits.MaxStringLength)
    {
        if (Encoding.UTF8.GetByteCount(message) <= maxBytes)
        {
            return message;
        }
        var length = Math.Min(message.Length, maxBytes);
        while (length > 0 && Encoding.UTF8.GetByteCount(message.AsSpan(0, length)) > maxBytes)
        {
            length--;
        }
        if (length > 0 && char.IsHighSurrogate(message[length - 1]))
        {
            length--;
        }
        return message[..length];
    }
}
