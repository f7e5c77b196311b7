using Microsoft.Extensions.Logging;

namespace NetSwap.Server.Exports.Swap;

/// <summary>Every creation, refusal, reattach and destruction of a swap area, with client address, size and reason.</summary>
internal static partial class SwapLog
{
    [LoggerMessage(300, LogLevel.Information, "swap: directory {Directory} ({Mode}); default size {DefaultSize} B, max {MaxSize} B, budget {Budget}, reserve {Reserve}% of the file system, allocation {Allocation}, swap header {Format}, grace {Grace}")]
    public static partial void Configured(ILogger logger, string directory, string mode, long defaultSize, long maxSize, string budget, double reserve, SwapAllocation allocation, bool format, TimeSpan grace);

    [LoggerMessage(301, LogLevel.Warning, "swap: cannot create {Configured} as a non-root user; using {Directory}")]
    public static partial void DirectoryFallback(ILogger logger, string configured, string directory);

    [LoggerMessage(302, LogLevel.Warning, "swap: removed {Name} ({Size} B) left in {Directory} by an earlier run")]
    public static partial void LeftoverRemoved(ILogger logger, string name, long size, string directory);

    [LoggerMessage(303, LogLevel.Information, "swap area {AreaId} for {Client} ({Export}): created, {Size} B, {Reserved} B reserved; {Committed} B of swap now in use")]
    public static partial void Created(ILogger logger, long areaId, string client, string export, long size, long reserved, long committed);

    [LoggerMessage(304, LogLevel.Warning, "swap for {Client} ({Export}) refused: {Reason}")]
    public static partial void Refused(ILogger logger, string client, string export, string reason);

    [LoggerMessage(305, LogLevel.Information, "swap area {AreaId} for {Client} ({Export}): destroyed ({Reason}), {Size} B freed; {Committed} B of swap still in use")]
    public static partial void Destroyed(ILogger logger, long areaId, string client, string export, string reason, long size, long committed);

    [LoggerMessage(306, LogLevel.Information, "swap area {AreaId} for {Client} ({Export}): kept for {Grace} after an unclean disconnect")]
    public static partial void GraceStarted(ILogger logger, long areaId, string client, string export, TimeSpan grace);

    [LoggerMessage(307, LogLevel.Information, "swap area {AreaId} for {Client} ({Export}): reattached after {Away:F1}s")]
    public static partial void Reattached(ILogger logger, long areaId, string client, string export, double away);

    [LoggerMessage(308, LogLevel.Information, "swap area {AreaId} ({Export}): the same client reconnected from {Client}; closing its old connection")]
    public static partial void TakingOver(ILogger logger, long areaId, string client, string export);
}
