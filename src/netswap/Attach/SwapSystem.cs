using System.Runtime.InteropServices;
using NetSwap.Protocol.Swap;

namespace NetSwap.Client.Attach;

/// <summary>
/// swapon(2), swapoff(2) and the swap header, done by netswap itself: a busybox initramfs has a swapon without
/// priorities and maybe no mkswap at all. Each returns null on success or the error to report.
/// </summary>
internal interface ISwapSystem
{
    string? SwapOn(string device, int? priority);
    string? SwapOff(string device);
    /// <summary>What mkswap does: a SWAPSPACE2 header with a fresh UUID, sized to the device.</summary>
    string? WriteHeader(string device);
    bool HasHeader(string device);
}

internal sealed partial class LinuxSwapSystem : ISwapSystem
{
    private const int SwapFlagPrefer = 0x8000;
    private const int SwapFlagPriorityMask = 0x7fff;

    [LibraryImport("libc", EntryPoint = "swapon", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SwapOnCall(string path, int flags);

    [LibraryImport("libc", EntryPoint = "swapoff", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SwapOffCall(string path);

    [LibraryImport("libc", EntryPoint = "lseek64", SetLastError = true)]
    private static partial long LSeek(Microsoft.Win32.SafeHandles.SafeFileHandle fd, long offset, int whence);

    public string? SwapOn(string device, int? priority)
    {
        var flags = priority is >= 0 and var p ? SwapFlagPrefer | (p & SwapFlagPriorityMask) : 0;
        return SwapOnCall(device, flags) == 0 ? null : $"swapon({device}): {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}";
    }

    public string? SwapOff(string device) =>
        SwapOffCall(device) == 0 ? null : $"swapoff({device}): {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}";

    public string? WriteHeader(string device)
    {
        try
        {
            using var stream = new FileStream(device, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
            // A block device's size comes from lseek, not from fstat (which says 0).
            var size = LSeek(stream.SafeFileHandle, 0, 2);
            if (size < 0)
            {
                return $"writing a swap header to {device}: cannot tell its size ({Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())})";
            }
            var page = new byte[SwapHeader.PageSize];
            SwapHeader.Write(page, size, Guid.NewGuid(), "netswap");
            stream.Seek(0, SeekOrigin.Begin);
            stream.Write(page);
            stream.Flush(flushToDisk: true);
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentOutOfRangeException)
        {
            return $"writing a swap header to {device}: {e.Message}";
        }
    }

    public bool HasHeader(string device)
    {
        try
        {
            using var stream = File.OpenRead(device);
            var page = new byte[SwapHeader.PageSize];
            stream.ReadExactly(page);
            return SwapHeader.TryRead(page, out _, out _, out _);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
