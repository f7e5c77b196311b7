using System.Buffers.Binary;
using System.Text;

namespace NetSwap.Client.Kernel;

/// <summary>
/// Generic netlink messages as the kernel's nbd driver takes them (include/uapi/linux/nbd-netlink.h): the family
/// look-up through the controller, NBD_CMD_RECONFIGURE, and the NBD_CMD_LINK_DEAD event. Built and parsed over spans
/// in host byte order, as netlink is; no sockets here, so every byte is unit-tested.
/// </summary>
internal static class NetlinkMessages
{
    public const int HeaderSize = 16;          // struct nlmsghdr
    public const int GenlHeaderSize = 4;       // struct genlmsghdr
    public const ushort NlmFRequest = 0x1;
    public const ushort NlmFAck = 0x4;
    public const ushort NlmsgError = 0x2;
    public const ushort NlmsgDone = 0x3;
    public const ushort NlaFNested = 0x8000;
    public const ushort NlaTypeMask = 0x3fff;

    public const ushort GenlIdCtrl = 0x10;
    public const byte CtrlCmdGetFamily = 3;
    public const ushort CtrlAttrFamilyId = 1;
    public const ushort CtrlAttrFamilyName = 2;
    public const ushort CtrlAttrMcastGroups = 7;
    public const ushort CtrlAttrMcastGrpName = 1;
    public const ushort CtrlAttrMcastGrpId = 2;

    public const string NbdFamilyName = "nbd";
    public const string NbdMulticastGroup = "nbd_mc_group";
    public const byte NbdGenlVersion = 1;
    public const byte NbdCmdConnect = 1;
    public const byte NbdCmdReconfigure = 3;
    public const byte NbdCmdLinkDead = 4;
    public const ushort NbdAttrIndex = 1;
    public const ushort NbdAttrSizeBytes = 2;
    public const ushort NbdAttrBlockSizeBytes = 3;
    public const ushort NbdAttrTimeout = 4;
    public const ushort NbdAttrServerFlags = 5;
    public const ushort NbdAttrSockets = 7;
    public const ushort NbdAttrDeadConnTimeout = 8;
    public const ushort NbdSockItem = 1;
    public const ushort NbdSockFd = 1;

    private static int Align(int length) => (length + 3) & ~3;

    /// <summary>Writes attributes one after another; nested ones through <see cref="BeginNested"/>/<see cref="EndNested"/>.</summary>
    public ref struct Writer
    {
        private readonly Span<byte> _buffer;
        private int _length;

        public Writer(Span<byte> buffer, ushort type, ushort flags, uint sequence, byte command, byte version)
        {
            _buffer = buffer;
            _buffer[..(HeaderSize + GenlHeaderSize)].Clear();
            BinaryPrimitives.WriteUInt16LittleEndian(_buffer[4..], type);
            BinaryPrimitives.WriteUInt16LittleEndian(_buffer[6..], flags);
            BinaryPrimitives.WriteUInt32LittleEndian(_buffer[8..], sequence);
            _buffer[HeaderSize] = command;
            _buffer[HeaderSize + 1] = version;
            _length = HeaderSize + GenlHeaderSize;
        }

        private Span<byte> Attribute(ushort type, int payload)
        {
            var total = 4 + payload;
            var span = _buffer.Slice(_length, Align(total));
            span.Clear();
            BinaryPrimitives.WriteUInt16LittleEndian(span, (ushort)total);
            BinaryPrimitives.WriteUInt16LittleEndian(span[2..], type);
            _length += Align(total);
            return span.Slice(4, payload);
        }

        public void U32(ushort type, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(Attribute(type, 4), value);

        public void U64(ushort type, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(Attribute(type, 8), value);

        public void String(ushort type, string value)
        {
            var payload = Attribute(type, Encoding.ASCII.GetByteCount(value) + 1);
            Encoding.ASCII.GetBytes(value, payload);
        }

        /// <summary>Starts a nested attribute; returns where its header is, for <see cref="EndNested"/>.</summary>
        public int BeginNested(ushort type)
        {
            var start = _length;
            BinaryPrimitives.WriteUInt16LittleEndian(_buffer[(start + 2)..], type);
            _length += 4;
            return start;
        }

        public void EndNested(int start) => BinaryPrimitives.WriteUInt16LittleEndian(_buffer[start..], (ushort)(_length - start));

        /// <summary>Sets the message length and returns the finished message.</summary>
        public Span<byte> Finish()
        {
            BinaryPrimitives.WriteUInt32LittleEndian(_buffer, (uint)_length);
            return _buffer[.._length];
        }
    }

    /// <summary>CTRL_CMD_GETFAMILY for a family name: the answer carries its id and its multicast groups.</summary>
    public static int GetFamily(Span<byte> buffer, uint sequence, string family)
    {
        var writer = new Writer(buffer, GenlIdCtrl, NlmFRequest, sequence, CtrlCmdGetFamily, 1);
        writer.String(CtrlAttrFamilyName, family);
        return writer.Finish().Length;
    }

    /// <summary>
    /// NBD_CMD_RECONFIGURE of device <paramref name="index"/>: any of the dead-connection timeout (how long requests wait
    /// for a new connection instead of failing), the I/O timeout, and a new socket to replace a dead one.
    /// </summary>
    public static int Reconfigure(Span<byte> buffer, ushort family, uint sequence, uint index, ulong? deadConnectionSeconds, ulong? timeoutSeconds, int? socket)
    {
        var writer = new Writer(buffer, family, NlmFRequest | NlmFAck, sequence, NbdCmdReconfigure, NbdGenlVersion);
        writer.U32(NbdAttrIndex, index);
        TimeoutsAndSocket(ref writer, deadConnectionSeconds, timeoutSeconds, socket);
        return writer.Finish().Length;
    }

    /// <summary>
    /// NBD_CMD_CONNECT of device <paramref name="index"/> with one connected socket, as nbd-client's netlink mode does
    /// it: the export's size and transmission flags from NBD_OPT_GO, the block size, the time-outs.
    /// </summary>
    public static int Connect(Span<byte> buffer, ushort family, uint sequence, uint index, ulong sizeBytes, ulong blockSize, ulong serverFlags,
        ulong? deadConnectionSeconds, ulong? timeoutSeconds, int socket)
    {
        var writer = new Writer(buffer, family, NlmFRequest | NlmFAck, sequence, NbdCmdConnect, NbdGenlVersion);
        writer.U32(NbdAttrIndex, index);
        writer.U64(NbdAttrSizeBytes, sizeBytes);
        writer.U64(NbdAttrBlockSizeBytes, blockSize);
        writer.U64(NbdAttrServerFlags, serverFlags);
        TimeoutsAndSocket(ref writer, deadConnectionSeconds, timeoutSeconds, socket);
        return writer.Finish().Length;
    }

    private static void TimeoutsAndSocket(ref Writer writer, ulong? deadConnectionSeconds, ulong? timeoutSeconds, int? socket)
    {
        if (timeoutSeconds is { } timeout)
        {
            writer.U64(NbdAttrTimeout, timeout);
        }
        if (deadConnectionSeconds is { } dead)
        {
            writer.U64(NbdAttrDeadConnTimeout, dead);
        }
        if (socket is { } fd)
        {
            var sockets = writer.BeginNested(NbdAttrSockets);
            var item = writer.BeginNested(NbdSockItem);
            writer.U32(NbdSockFd, (uint)fd);
            writer.EndNested(item);
            writer.EndNested(sockets);
        }
    }

    public readonly record struct Header(uint Length, ushort Type, ushort Flags, uint Sequence, uint Port);

    public static bool TryReadHeader(ReadOnlySpan<byte> message, out Header header)
    {
        header = default;
        if (message.Length < HeaderSize)
        {
            return false;
        }
        header = new Header(BinaryPrimitives.ReadUInt32LittleEndian(message), BinaryPrimitives.ReadUInt16LittleEndian(message[4..]),
            BinaryPrimitives.ReadUInt16LittleEndian(message[6..]), BinaryPrimitives.ReadUInt32LittleEndian(message[8..]),
            BinaryPrimitives.ReadUInt32LittleEndian(message[12..]));
        return header.Length >= HeaderSize && header.Length <= message.Length;
    }

    /// <summary>The messages of one datagram (netlink packs several, each aligned to 4).</summary>
    public static List<(Header Header, int Offset)> Split(ReadOnlySpan<byte> datagram)
    {
        var messages = new List<(Header, int)>();
        var offset = 0;
        while (offset + HeaderSize <= datagram.Length && TryReadHeader(datagram[offset..], out var header))
        {
            messages.Add((header, offset));
            offset += Align((int)header.Length);
        }
        return messages;
    }

    /// <summary>The errno of an NLMSG_ERROR message (0 is the acknowledgement).</summary>
    public static int ReadError(ReadOnlySpan<byte> message) =>
        message.Length >= HeaderSize + 4 ? -BinaryPrimitives.ReadInt32LittleEndian(message[HeaderSize..]) : 5; // EIO

    /// <summary>The attributes that follow a generic netlink header (or any attribute list).</summary>
    public static Dictionary<ushort, byte[]> Attributes(ReadOnlySpan<byte> attributes)
    {
        var result = new Dictionary<ushort, byte[]>();
        var offset = 0;
        while (offset + 4 <= attributes.Length)
        {
            var length = BinaryPrimitives.ReadUInt16LittleEndian(attributes[offset..]);
            var type = (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(attributes[(offset + 2)..]) & NlaTypeMask);
            if (length < 4 || offset + length > attributes.Length)
            {
                break;
            }
            result[type] = attributes.Slice(offset + 4, length - 4).ToArray();
            offset += Align(length);
        }
        return result;
    }

    /// <summary>A generic netlink message's command and attributes.</summary>
    public static (byte Command, Dictionary<ushort, byte[]> Attributes) ReadGeneric(ReadOnlySpan<byte> message) =>
        message.Length < HeaderSize + GenlHeaderSize ? ((byte)0, new Dictionary<ushort, byte[]>()) : (message[HeaderSize], Attributes(message[(HeaderSize + GenlHeaderSize)..]));

    /// <summary>From a CTRL_CMD_NEWFAMILY answer: the family id and the id of the multicast group named.</summary>
    public static bool TryReadFamily(ReadOnlySpan<byte> message, string group, out ushort family, out uint groupId)
    {
        family = 0;
        groupId = 0;
        var (_, attributes) = ReadGeneric(message);
        if (!attributes.TryGetValue(CtrlAttrFamilyId, out var id) || id.Length < 2)
        {
            return false;
        }
        family = BinaryPrimitives.ReadUInt16LittleEndian(id);
        if (attributes.TryGetValue(CtrlAttrMcastGroups, out var groups))
        {
            // An array: each element is a nested attribute (its type is its position) holding a name and an id.
            foreach (var element in Attributes(groups).Values)
            {
                var fields = Attributes(element);
                if (fields.TryGetValue(CtrlAttrMcastGrpName, out var name) && fields.TryGetValue(CtrlAttrMcastGrpId, out var gid) && gid.Length >= 4
                    && Encoding.ASCII.GetString(name).TrimEnd('\0') == group)
                {
                    groupId = BinaryPrimitives.ReadUInt32LittleEndian(gid);
                }
            }
        }
        return true;
    }

    /// <summary>The device index of an NBD_CMD_LINK_DEAD event, or null when the message is something else.</summary>
    public static uint? LinkDeadIndex(ReadOnlySpan<byte> message, ushort family)
    {
        if (!TryReadHeader(message, out var header) || header.Type != family)
        {
            return null;
        }
        var (command, attributes) = ReadGeneric(message[..(int)header.Length]);
        return command == NbdCmdLinkDead && attributes.TryGetValue(NbdAttrIndex, out var index) && index.Length >= 4
            ? BinaryPrimitives.ReadUInt32LittleEndian(index)
            : null;
    }
}
