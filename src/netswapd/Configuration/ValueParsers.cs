using System.Globalization;
using System.Net;

namespace NetSwap.Daemon.Configuration;

/// <summary>A value that does not parse: the message says what was expected. The caller adds where it came from.</summary>
internal sealed class SettingValueException(string message) : Exception(message);

internal static class ValueParsers
{
    /// <summary>"10s", "500ms", "2m", "1h"; a bare number is seconds.</summary>
    public static TimeSpan Duration(string text)
    {
        var t = text.Trim();
        (string number, double scale) = t switch
        {
            _ when t.EndsWith("ms", StringComparison.Ordinal) => (t[..^2], 0.001),
            _ when t.EndsWith('s') => (t[..^1], 1),
            _ when t.EndsWith('m') => (t[..^1], 60),
            _ when t.EndsWith('h') => (t[..^1], 3600),
            _ => (t, 1),
        };
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value < 0 || double.IsInfinity(value))
        {
            throw new SettingValueException($"'{text}' is not a duration (examples: 10s, 500ms, 2m)");
        }
        return TimeSpan.FromSeconds(value * scale);
    }

    /// <summary>Bytes with binary suffixes: "512M", "4G", "64k", "1T"; a bare number is bytes.</summary>
    public static long Size(string text)
    {
        var t = text.Trim();
        if (t.EndsWith("iB", StringComparison.OrdinalIgnoreCase))
        {
            t = t[..^2];
        }
        else if (t.EndsWith('B') || t.EndsWith('b'))
        {
            t = t[..^1];
        }
        // The same units as the swap export names (swap:512M): one parser for both.
        return NetSwap.Protocol.Swap.SwapExportName.TryParseSize(t, out var bytes)
            ? bytes
            : throw new SettingValueException($"'{text}' is not a size (examples: 512M, 4G, 65536)");
    }

    /// <summary>"5%" or "5": a percentage from 0 to 100.</summary>
    public static double Percent(string text)
    {
        var t = text.Trim().TrimEnd('%');
        if (!double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value < 0 || value > 100)
        {
            throw new SettingValueException($"'{text}' is not a percentage from 0 to 100");
        }
        return value;
    }

    public static int Integer(string text, int minimum, int maximum)
    {
        if (!int.TryParse(text.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) || value < minimum || value > maximum)
        {
            throw new SettingValueException($"'{text}' is not a whole number from {minimum} to {maximum}");
        }
        return value;
    }

    public static bool Boolean(string text) => text.Trim().ToLowerInvariant() switch
    {
        "true" or "yes" or "on" or "1" => true,
        "false" or "no" or "off" or "0" => false,
        _ => throw new SettingValueException($"'{text}' is not a boolean (true or false)"),
    };

    /// <summary>"0.0.0.0:9572", "[::]:9572", "127.0.0.1:0". Host names are not resolved: a daemon binds addresses.</summary>
    public static IPEndPoint Endpoint(string text)
    {
        if (!IPEndPoint.TryParse(text.Trim(), out var endpoint) || !text.Contains(':', StringComparison.Ordinal)
            || (endpoint.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 && !text.TrimStart().StartsWith('[')))
        {
            throw new SettingValueException($"'{text}' is not ADDRESS:PORT (examples: 0.0.0.0:9572, [::]:9572)");
        }
        return endpoint;
    }
}
