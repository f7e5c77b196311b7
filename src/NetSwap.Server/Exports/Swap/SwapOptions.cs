using System.Net;

namespace NetSwap.Server.Exports.Swap;

internal enum SwapAllocation
{
    /// <summary>fallocate the whole area at connect: no ENOSPC in the middle of swapping.</summary>
    Reserve,
    /// <summary>Thin provisioning: space is taken as the client writes; TRIM gives it back.</summary>
    Sparse,
}

/// <summary>A per-subnet default size from the config file ([[swap.rule]] subnet = "...", size = "...").</summary>
internal sealed record SwapSizeRule(IPNetwork Subnet, long Size);

/// <summary>Swap on demand: where areas live and how large they may be. Every value is logged at start.</summary>
internal sealed class SwapOptions
{
    public const string DefaultDirectory = "/var/lib/netswap";

    public bool Enabled { get; set; } = true;
    public string Directory { get; set; } = DefaultDirectory;
    /// <summary>Size of an area when the client names none (LTSP nbdswapd's last default).</summary>
    public long DefaultSize { get; set; } = 512L << 20;
    /// <summary>Largest size a client may ask for in the export name.</summary>
    public long MaxSize { get; set; } = 4L << 30;
    /// <summary>Sum of the sizes of all areas that exist (attached or in grace); 0: no budget beyond the reserve.</summary>
    public long Budget { get; set; }
    /// <summary>Part of the swap file system that is never handed out, in percent.</summary>
    public double ReservePercent { get; set; } = 5;
    public SwapAllocation Allocation { get; set; } = SwapAllocation.Reserve;
    /// <summary>Hand areas out with a Linux swap header already written (swapon without mkswap).</summary>
    public bool Format { get; set; } = true;
    /// <summary>How long the area of a swap/TOKEN export survives an unclean disconnect, for the client to reconnect.</summary>
    public TimeSpan Grace { get; set; } = TimeSpan.FromSeconds(90);
    public List<SwapSizeRule> Rules { get; } = [];

    /// <summary>The default size for a client: the most specific matching rule, else <see cref="DefaultSize"/>.</summary>
    public long DefaultSizeFor(IPAddress? address) =>
        address is null ? DefaultSize : Access.AddressRuleSet.MostSpecific(Rules, r => r.Subnet, address)?.Size ?? DefaultSize;
}
