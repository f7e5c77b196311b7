using System.Diagnostics;
using System.Net;
using Microsoft.Win32.SafeHandles;

namespace NetSwap.Server.Exports.Swap;

internal enum SwapAreaState
{
    Attached,
    Grace,
    Destroyed,
}

/// <summary>
/// One client's swap space: a nameless file, its size, who owns it, and its state. State changes happen only in
/// <see cref="SwapAreaRegistry"/>, under its lock.
/// </summary>
internal sealed class SwapArea
{
    public SwapArea(long id, string export, string? token, IPAddress? address, string client, long size, SafeFileHandle handle, long reserved)
    {
        Id = id;
        Export = export;
        Token = token;
        Address = address;
        Client = client;
        Size = size;
        Handle = handle;
        Reserved = reserved;
        CreatedAt = DateTimeOffset.UtcNow;
        AttachedAt = CreatedAt;
    }

    public long Id { get; }
    public string Export { get; }
    public string? Token { get; }
    public IPAddress? Address { get; }
    public string Client { get; set; }
    public long Size { get; }
    public SafeFileHandle Handle { get; }
    /// <summary>Bytes fallocated for the area at creation (reserve mode), 0 when sparse.</summary>
    public long Reserved { get; }
    public DateTimeOffset CreatedAt { get; }
    public DateTimeOffset AttachedAt { get; set; }
    public SwapAreaState State { get; set; } = SwapAreaState.Attached;
    /// <summary>The connection that holds the area; cut when the same client reconnects with the same token.</summary>
    public Action? AbortOwner { get; set; }
    /// <summary>Completed when the current owner lets go (detach, or destruction).</summary>
    public TaskCompletionSource Released { get; set; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public DateTimeOffset? GraceDeadline { get; set; }
    public long GraceStartedTimestamp { get; set; }
    public Timer? GraceTimer { get; set; }
    public long BytesRead;
    public long BytesWritten;

    public double SecondsAway => Stopwatch.GetElapsedTime(GraceStartedTimestamp).TotalSeconds;
}
