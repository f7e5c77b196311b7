using System.Globalization;
using System.Runtime.InteropServices;

namespace NetSwap.Daemon;

/// <summary>
/// A signal ignored when the daemon starts stays ignored across exec (nohup ignores SIGHUP, for one), and .NET does not
/// install a handler for a signal that is ignored: netswapd started under nohup would never reload on SIGHUP. SIGHUP
/// is the daemon's reload signal and never ends it, so an inherited "ignore" is set back to the default before the
/// handler is registered. The other signals keep what they were given.
/// </summary>
internal static partial class SignalDispositions
{
    public const int SigHup = 1;

    private const nint SigDfl = 0;

    [LibraryImport("libc", EntryPoint = "signal")]
    private static partial nint Signal(int signal, nint handler);

    /// <summary>Sets <paramref name="signal"/> back to its default disposition if it is ignored (and only then: a
    /// handler the runtime installed must stay).</summary>
    public static void Unignore(int signal)
    {
        if (IsIgnored(signal, ReadStatus()))
        {
            Signal(signal, SigDfl);
        }
    }

    /// <summary>Whether the SigIgn mask of /proc/self/status (hex; bit N-1 is signal N) has <paramref name="signal"/>.</summary>
    internal static bool IsIgnored(int signal, string? status)
    {
        foreach (var line in (status ?? "").Split('\n'))
        {
            if (line.StartsWith("SigIgn:", StringComparison.Ordinal)
                && ulong.TryParse(line.AsSpan("SigIgn:".Length).Trim(), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var mask))
            {
                return (mask & (1UL << (signal - 1))) != 0;
            }
        }
        return false;
    }

    private static string? ReadStatus()
    {
        try
        {
            return File.ReadAllText("/proc/self/status");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // No /proc (a bare chroot): the disposition stays as it was given.
            return null;
        }
    }
}
