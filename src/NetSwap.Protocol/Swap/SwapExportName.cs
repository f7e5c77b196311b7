using System.Globalization;

namespace NetSwap.Protocol.Swap;

/// <summary>
/// The export names that ask for swap: <c>swap</c>, <c>swap/TOKEN</c>, each optionally followed by <c>:SIZE</c>
/// (<c>swap:256M</c>, <c>swap/lab-pc-07:1G</c>). TOKEN is what lets a client find its area again after a reconnect:
/// 1 to 64 characters of [A-Za-z0-9._-], never used in a path.
/// </summary>
public readonly record struct SwapExportName(string? Token, long? RequestedSize)
{
    public const string Prefix = "swap";
    public const int MaxTokenLength = 64;

    /// <summary>Whether the name is in the swap namespace at all ("swap", "swap/…", "swap:…").</summary>
    public static bool IsSwapName(string name) =>
        name == Prefix || name.StartsWith(Prefix + "/", StringComparison.Ordinal) || name.StartsWith(Prefix + ":", StringComparison.Ordinal);

    /// <summary>Parses a name of the swap namespace; false with a reason (for NBD_REP_ERR_INVALID) when malformed.</summary>
    public static bool TryParse(string name, out SwapExportName result, out string? problem)
    {
        result = default;
        problem = null;
        if (!IsSwapName(name))
        {
            problem = $"'{name}' is not a swap export name";
            return false;
        }
        var rest = name[Prefix.Length..];
        long? size = null;
        var colon = rest.IndexOf(':', StringComparison.Ordinal);
        if (colon >= 0)
        {
            if (!TryParseSize(rest[(colon + 1)..], out var parsed) || parsed <= 0)
            {
                problem = $"'{rest[(colon + 1)..]}' is not a size (examples: 256M, 1G)";
                return false;
            }
            size = parsed;
            rest = rest[..colon];
        }
        string? token = null;
        if (rest.Length > 0)
        {
            token = rest[1..];
            if (!IsValidToken(token))
            {
                problem = $"swap token must be 1 to {MaxTokenLength} characters of A-Z a-z 0-9 . _ -";
                return false;
            }
        }
        result = new SwapExportName(token, size);
        return true;
    }

    public static bool IsValidToken(string token)
    {
        if (token.Length is 0 or > MaxTokenLength || token is "." or "..")
        {
            return false;
        }
        foreach (var c in token)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>"256M", "1G", "512K", "1073741824": binary units.</summary>
    public static bool TryParseSize(string text, out long bytes)
    {
        bytes = 0;
        if (text.Length == 0)
        {
            return false;
        }
        long scale = 1;
        var digits = text;
        var unit = char.ToUpperInvariant(text[^1]);
        if (char.IsAsciiLetter(unit))
        {
            scale = unit switch
            {
                'K' => 1L << 10,
                'M' => 1L << 20,
                'G' => 1L << 30,
                'T' => 1L << 40,
                _ => 0,
            };
            digits = text[..^1];
        }
        return scale != 0
            && long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var value)
            && value <= long.MaxValue / scale
            && (bytes = value * scale) >= 0;
    }

    public override string ToString() =>
        Prefix + (Token is null ? "" : "/" + Token) + (RequestedSize is > 0 and var s ? ":" + FormatSize(s) : "");

    public static string FormatSize(long bytes) => bytes switch
    {
        _ when bytes % (1L << 30) == 0 => (bytes >> 30).ToString(CultureInfo.InvariantCulture) + "G",
        _ when bytes % (1L << 20) == 0 => (bytes >> 20).ToString(CultureInfo.InvariantCulture) + "M",
        _ when bytes % (1L << 10) == 0 => (bytes >> 10).ToString(CultureInfo.InvariantCulture) + "K",
        _ => bytes.ToString(CultureInfo.InvariantCulture),
    };
}
