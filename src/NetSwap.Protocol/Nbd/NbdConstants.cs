namespace NetSwap.Protocol.Nbd;

/// <summary>Magic numbers and fixed sizes of doc/proto.md (NetworkBlockDevice/nbd).</summary>
public static class NbdMagic
{
    /// <summary>"NBDMAGIC", first 8 bytes of every handshake (INIT_PASSWD).</summary>
    public const ulong InitPasswd = 0x4e42444d41474943;
    /// <summary>"IHAVEOPT": newstyle greeting and every option request.</summary>
    public const ulong IHaveOpt = 0x49484156454F5054;
    /// <summary>cliserv_magic of the oldstyle handshake.</summary>
    public const ulong OldstyleCliserv = 0x00420281861253;
    public const ulong OptionReply = 0x3e889045565a9;
    public const uint Request = 0x25609513;
    public const uint SimpleReply = 0x67446698;
    public const uint StructuredReply = 0x668e33ef;
}

public static class NbdLimits
{
    /// <summary>Strings (export names, messages) MUST be no longer than 4096 bytes (spec, Conventions).</summary>
    public const int MaxStringLength = 4096;
    /// <summary>Largest option payload we read; anything longer is a hostile or broken client.</summary>
    public const int MaxOptionLength = 64 * 1024;
    /// <summary>Options one connection may send before it is cut off as a denial of service.</summary>
    public const int MaxOptionCount = 64;
    /// <summary>Largest READ or WRITE payload accepted. The reference test client sends 47.5 MiB writes.</summary>
    public const int MaxPayloadLength = 64 * 1024 * 1024;
    /// <summary>Block size constraints advertised in NBD_INFO_BLOCK_SIZE.</summary>
    public const int MinimumBlockSize = 1;
    public const int PreferredBlockSize = 4096;
    public const int MaximumBlockSize = 32 * 1024 * 1024;
}
