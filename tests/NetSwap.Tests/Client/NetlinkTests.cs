using System.Buffers.Binary;
using NetSwap.Client.Kernel;

namespace NetSwap.Tests.Client;

/// <summary>
/// The nbd driver's netlink messages, byte for byte as include/uapi/linux/nbd-netlink.h lays them out, and the
/// generic-netlink look-up against this machine's real kernel (which has the controller, but no nbd module).
/// </summary>
public class NetlinkTests
{
    [Fact]
    public void Reconfigure_WithASocket_IsLaidOutAsTheKernelReadsIt()
    {
        var buffer = new byte[256];
        var length = NetlinkMessages.Reconfigure(buffer, family: 0x1c, sequence: 9, index: 2, deadConnectionSeconds: 120, timeoutSeconds: 30, socket: 7);
        byte[] expected =
        [
            // nlmsghdr: length 68, type = the nbd family, flags REQUEST|ACK, sequence 9, port 0
            68, 0, 0, 0, 0x1c, 0, 5, 0, 9, 0, 0, 0, 0, 0, 0, 0,
            // genlmsghdr: NBD_CMD_RECONFIGURE, version 1
            3, 1, 0, 0,
            // NBD_ATTR_INDEX = 2 (u32)
            8, 0, 1, 0, 2, 0, 0, 0,
            // NBD_ATTR_TIMEOUT = 30 (u64)
            12, 0, 4, 0, 30, 0, 0, 0, 0, 0, 0, 0,
            // NBD_ATTR_DEAD_CONN_TIMEOUT = 120 (u64)
            12, 0, 8, 0, 120, 0, 0, 0, 0, 0, 0, 0,
            // NBD_ATTR_SOCKETS { NBD_SOCK_ITEM { NBD_SOCK_FD = 7 } }
            16, 0, 7, 0, 12, 0, 1, 0, 8, 0, 1, 0, 7, 0, 0, 0,
        ];
        Assert.Equal(expected, buffer[..length]);
    }

    [Fact]
    public void GetFamily_NamesTheFamily_NulTerminated_AndPadded()
    {
        var buffer = new byte[64];
        var length = NetlinkMessages.GetFamily(buffer, 1, "nbd");
        Assert.Equal(28, length);
        Assert.Equal(28u, BinaryPrimitives.ReadUInt32LittleEndian(buffer));
        Assert.Equal((ushort)0x10, BinaryPrimitives.ReadUInt16LittleEndian(buffer.AsSpan(4)));
        Assert.Equal(NetlinkMessages.CtrlCmdGetFamily, buffer[16]);
        Assert.Equal(new byte[] { 8, 0, 2, 0, (byte)'n', (byte)'b', (byte)'d', 0 }, buffer[20..28]);
    }

    [Fact]
    public void LinkDead_Event_GivesTheDeviceIndex_OnlyForTheNbdFamily()
    {
        var buffer = new byte[64];
        var writer = new NetlinkMessages.Writer(buffer, 0x1c, 0, 0, NetlinkMessages.NbdCmdLinkDead, 1);
        writer.U32(NetlinkMessages.NbdAttrIndex, 5);
        var message = writer.Finish().ToArray();
        Assert.Equal(5u, NetlinkMessages.LinkDeadIndex(message, 0x1c));
        Assert.Null(NetlinkMessages.LinkDeadIndex(message, 0x1d));
        var other = new NetlinkMessages.Writer(buffer, 0x1c, 0, 0, NetlinkMessages.NbdCmdReconfigure, 1);
        other.U32(NetlinkMessages.NbdAttrIndex, 5);
        Assert.Null(NetlinkMessages.LinkDeadIndex(other.Finish().ToArray(), 0x1c));
    }

    [Fact]
    public void FamilyAnswer_WithMulticastGroups_IsRead()
    {
        var buffer = new byte[256];
        var writer = new NetlinkMessages.Writer(buffer, 0x10, 0, 1, 1, 2);
        writer.String(NetlinkMessages.CtrlAttrFamilyName, "nbd");
        writer.U32(NetlinkMessages.CtrlAttrFamilyId, 0x1c);   // a u16 in a 4-byte attribute: the low half counts
        var groups = writer.BeginNested(NetlinkMessages.CtrlAttrMcastGroups);
        var first = writer.BeginNested(1);
        writer.String(NetlinkMessages.CtrlAttrMcastGrpName, "nbd_mc_group");
        writer.U32(NetlinkMessages.CtrlAttrMcastGrpId, 11);
        writer.EndNested(first);
        writer.EndNested(groups);
        Assert.True(NetlinkMessages.TryReadFamily(writer.Finish(), "nbd_mc_group", out var family, out var group));
        Assert.Equal((ushort)0x1c, family);
        Assert.Equal(11u, group);
    }

    [Fact]
    public void LookUp_OnThisKernel_FindsTheController_AndNamesAMissingFamily()
    {
        // The controller describes itself: family 0x10 with its "notify" group.
        var (family, group) = NbdNetlink.LookUp("nlctrl", "notify");
        Assert.Equal((ushort)0x10, family);
        Assert.NotEqual(0u, group);
        // This host has no nbd module (the guest does): a precise error, not a hang.
        var missing = Assert.Throws<NetlinkException>(() => NbdNetlink.LookUp("netswap-none", "x"));
        Assert.Contains("no 'netswap-none' netlink family", missing.Message, StringComparison.Ordinal);
    }
}
