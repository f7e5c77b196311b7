using System.Buffers.Binary;
using System.Text;

namespace NetSwap.Protocol.Discovery;

/// <summary>Constants of NetSwap's server discovery (docs/discovery.md).</summary>
public static class DiscoveryProtocol
{
    public const int Port = 9572;
    /// <summary>"NSWP".</summary>
    public const uint Magic = 0x4E535750;
    public const byte Version = 1;
    /// <summary>Every probe is padded to this size, and no reply is ever larger than the probe it answers: no amplification.</summary>
    public const int ProbeSize = 256;
    /// <summary>Larger datagrams are not probes of any version we speak: no reply.</summary>
    public const int MaxProbeSize = 1024;
    /// <summary>IPv6 link-local multicast group the servers join on every interface.</summary>
    public const string MulticastGroup = "ff02::4e53:5750";
}

public enum DiscoveryMessageType : byte
{
    Probe = 1,
    Reply = 2,
}

[Flags]
public enum DiscoveryReplyFlags : ushort
{
    None = 0,
    TlsOffered = 1 << 0,
    TlsRequired = 1 << 1,
    SwapAvailable = 1 << 2,
}

/// <summary>
/// A client looking for swap servers (sent to the broadcast address and the multicast group).
/// <code>
/// 0      4     5      6       8         12            20          21           ProbeSize
/// +------+-----+------+-------+---------+-------------+-----------+------------+---------+
/// |magic | ver | type | flags | probeId | wanted size | token len | token (≤64)| zeros   |
/// +------+-----+------+-------+---------+-------------+-----------+------------+---------+
/// </code>
/// </summary>
public readonly record struct DiscoveryProbe(uint ProbeId, ulong WantedSize, string Token)
{
    private const int TokenOffset = 21;

    public void Write(Span<byte> destination)
    {
        destination[..DiscoveryProtocol.ProbeSize].Clear();
        BinaryPrimitives.WriteUInt32BigEndian(destination, DiscoveryProtocol.Magic);
        destination[4] = DiscoveryProtocol.Version;
        destination[5] = (byte)DiscoveryMessageType.Probe;
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], ProbeId);
        BinaryPrimitives.WriteUInt64BigEndian(destination[12..], WantedSize);
        var length = Encoding.ASCII.GetBytes(Token, destination[TokenOffset..(TokenOffset + 64)]);
        destination[20] = (byte)length;
    }

    /// <summary>
    /// Parses a probe. False for anything that is not exactly a NetSwap probe of a version we speak and at least
    /// <see cref="DiscoveryProtocol.ProbeSize"/> bytes long: such datagrams get no reply at all.
    /// </summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out DiscoveryProbe probe)
    {
        probe = default;
        if (source.Length < DiscoveryProtocol.ProbeSize || source.Length > DiscoveryProtocol.MaxProbeSize
            || BinaryPrimitives.ReadUInt32BigEndian(source) != DiscoveryProtocol.Magic
            || source[4] != DiscoveryProtocol.Version
            || source[5] != (byte)DiscoveryMessageType.Probe)
        {
            return false;
        }
        var tokenLength = source[20];
        if (tokenLength > 64)
        {
            return false;
        }
        var token = Encoding.ASCII.GetString(source.Slice(TokenOffset, tokenLength));
        if (token.Length > 0 && !Swap.SwapExportName.IsValidToken(token))
        {
            return false;
        }
        probe = new DiscoveryProbe(BinaryPrimitives.ReadUInt32BigEndian(source[8..]), BinaryPrimitives.ReadUInt64BigEndian(source[12..]), token);
        return true;
    }
}

/// <summary>
/// A server's answer.
/// <code>
/// 0      4     5      6       8         12     14        18     20              28          36
/// +------+-----+------+-------+---------+------+---------+------+---------------+-----------+
/// |magic | ver | type | flags | probeId | port | clients | load | free capacity | max size  |
/// +------+-----+------+-------+---------+------+---------+------+---------------+-----------+
/// 36              37                   ...
/// +---------------+----------+---------+--------+
/// | version len   | version  | name len| name   |   (strings of at most 63 bytes each)
/// +---------------+----------+---------+--------+
/// </code>
/// Load is per mille of the server's capacity in use (swap budget or file system). Free capacity is what this client
/// could get now; max size is the largest area one client may have.
/// </summary>
public readonly record struct DiscoveryReply(
    uint ProbeId, DiscoveryReplyFlags Flags, ushort NbdPort, uint Clients, ushort LoadPerMille, ulong FreeCapacity, ulong MaxSize,
    string ServerVersion, string ServerName)
{
    public const int FixedSize = 36;
    public const int MaxStringLength = 63;

    public int Size => FixedSize + 2 + Math.Min(Encoding.UTF8.GetByteCount(ServerVersion), MaxStringLength) + Math.Min(Encoding.UTF8.GetByteCount(ServerName), MaxStringLength);

    public int Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, DiscoveryProtocol.Magic);
        destination[4] = DiscoveryProtocol.Version;
        destination[5] = (byte)DiscoveryMessageType.Reply;
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)Flags);
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], ProbeId);
        BinaryPrimitives.WriteUInt16BigEndian(destination[12..], NbdPort);
        BinaryPrimitives.WriteUInt32BigEndian(destination[14..], Clients);
        BinaryPrimitives.WriteUInt16BigEndian(destination[18..], LoadPerMille);
        BinaryPrimitives.WriteUInt64BigEndian(destination[20..], FreeCapacity);
        BinaryPrimitives.WriteUInt64BigEndian(destination[28..], MaxSize);
        var position = FixedSize;
        position += WriteString(destination[position..], ServerVersion);
        position += WriteString(destination[position..], ServerName);
        return position;
    }

    private static int WriteString(Span<byte> destination, string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        var length = Math.Min(bytes.Length, MaxStringLength);
        destination[0] = (byte)length;
        bytes.AsSpan(0, length).CopyTo(destination[1..]);
        return 1 + length;
    }

    public static bool TryRead(ReadOnlySpan<byte> source, out DiscoveryReply reply)
    {
        reply = default;
        if (source.Length < FixedSize + 2
            || BinaryPrimitives.ReadUInt32BigEndian(source) != DiscoveryProtocol.Magic
            || source[4] != DiscoveryProtocol.Version
            || source[5] != (byte)DiscoveryMessageType.Reply)
        {
            return false;
        }
        var position = FixedSize;
        if (!TryReadString(source, ref position, out var version) || !TryReadString(source, ref position, out var name))
        {
            return false;
        }
        reply = new DiscoveryReply(
            BinaryPrimitives.ReadUInt32BigEndian(source[8..]),
            (DiscoveryReplyFlags)BinaryPrimitives.ReadUInt16BigEndian(source[6..]),
            BinaryPrimitives.ReadUInt16BigEndian(source[12..]),
            BinaryPrimitives.ReadUInt32BigEndian(source[14..]),
            BinaryPrimitives.ReadUInt16BigEndian(source[18..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[20..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[28..]),
            version, name);
        return true;
    }

    private static bool TryReadString(ReadOnlySpan<byte> source, ref int position, out string value)
    {
        value = "";
        if (position >= source.Length)
        {
            return false;
        }
        var length = source[position];
        if (length > MaxStringLength || position + 1 + length > source.Length)
        {
            return false;
        }
        value = Encoding.UTF8.GetString(source.Slice(position + 1, length));
        position += 1 + length;
        return true;
    }
}
