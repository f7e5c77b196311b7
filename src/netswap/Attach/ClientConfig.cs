using System.Globalization;

namespace NetSwap.Client.Attach;

internal enum SwapPolicy
{
    Auto,
    Yes,
    No,
}

/// <summary>
/// /etc/netswap/client.conf, shell-style KEY=VALUE lines (as LTSP's lts.conf): SWAP=auto|yes|no, SERVER=, SIZE=,
/// ENCRYPT=, PRIORITY=, THRESHOLD= (attach only when MemTotal is below it, as LTSP's NBD_SWAP_THRESHOLD), TOKEN=,
/// TLS=off|require|prefer and TLS_CERTIFICATES=DIR (swap over kernel TLS).
/// A netbooted client may carry netswap=host[:port] on the kernel command line, which wins over SERVER, or netswap=off,
/// which wins over everything. LTSP5's lts.conf keys for network swap are taken too, so an image's existing lines keep
/// working: NBD_SWAP (SWAP=yes/no), NBD_SWAP_SERVER (SERVER), NBD_SWAP_PORT (the port of SERVER) and ENCRYPT_SWAP
/// (ENCRYPT), with LTSP's booleans (Y, y, True, true / N, n, False, false).
/// </summary>
internal sealed record ClientConfig
{
    public const string DefaultPath = "/etc/netswap/client.conf";

    public SwapPolicy Swap { get; init; } = SwapPolicy.Auto;
    public string? Server { get; init; }
    /// <summary>NBD_SWAP_PORT: the port of a SERVER given without one.</summary>
    public int? Port { get; init; }
    public long? Size { get; init; }
    public bool Encrypt { get; init; }
    public int? Priority { get; init; }
    /// <summary>Bytes; with SWAP=auto, attach only when the machine has less memory than this.</summary>
    public long Threshold { get; init; } = 1L << 30;
    public string? Token { get; init; }
    /// <summary>TLS=off|require|prefer: attach over kernel TLS (netswap attach --tls).</summary>
    public string Tls { get; init; } = "off";
    /// <summary>TLS_CERTIFICATES=DIR: the client's credentials (ca-cert.pem, client-cert.pem, client-key.pem).</summary>
    public string? TlsCertificates { get; init; }
    /// <summary>Why swap is off, for the message: SWAP=no in the file, or netswap=off on the kernel command line.</summary>
    public string? OffBecause { get; init; }

    public static ClientConfig Load(string path, string? kernelCommandLine)
    {
        var config = new ClientConfig();
        if (File.Exists(path))
        {
            config = Parse(path, File.ReadAllLines(path));
            if (config.Swap == SwapPolicy.No)
            {
                config = config with { OffBecause = $"SWAP=no in {path}" };
            }
        }
        return ServerFromKernelCommandLine(kernelCommandLine) switch
        {
            null => config,
            // netswap=off wins over everything, as the initramfs script already honours it.
            "off" => config with { Swap = SwapPolicy.No, OffBecause = "netswap=off on the kernel command line" },
            // netswap=on: attach, by discovery or SERVER, whatever SWAP and THRESHOLD say.
            "on" => config with { Swap = SwapPolicy.Yes, OffBecause = null },
            var server => config with { Server = server },
        };
    }

    public static ClientConfig Parse(string path, IEnumerable<string> lines)
    {
        var config = new ClientConfig();
        var number = 0;
        foreach (var raw in lines)
        {
            number++;
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }
            var equals = line.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                throw new FormatException($"{path}:{number}: expected KEY=VALUE");
            }
            var key = line[..equals].Trim();
            var value = line[(equals + 1)..].Trim().Trim('"', '\'');
            config = key switch
            {
                "NBD_SWAP" => config with { Swap = LtspBoolean(path, number, key, value) ? SwapPolicy.Yes : SwapPolicy.No },
                "NBD_SWAP_SERVER" => config with { Server = value.Length == 0 ? null : value },
                "NBD_SWAP_PORT" => config with
                {
                    Port = value.Length == 0 ? null : int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var port) && port is > 0 and <= 65535
                        ? port : throw new FormatException($"{path}:{number}: NBD_SWAP_PORT must be a port number (1-65535)"),
                },
                "ENCRYPT_SWAP" => config with { Encrypt = LtspBoolean(path, number, key, value) },
                "SWAP" => config with
                {
                    Swap = value.ToLowerInvariant() switch
                    {
                        "auto" => SwapPolicy.Auto,
                        "yes" or "true" or "1" => SwapPolicy.Yes,
                        "no" or "false" or "0" => SwapPolicy.No,
                        _ => throw new FormatException($"{path}:{number}: SWAP must be auto, yes or no"),
                    },
                },
                "SERVER" => config with { Server = value.Length == 0 ? null : value },
                "SIZE" => config with { Size = value.Length == 0 ? null : ParseSize(path, number, value) },
                "ENCRYPT" => config with { Encrypt = value.ToLowerInvariant() is "yes" or "true" or "1" },
                "PRIORITY" => config with
                {
                    Priority = value.Length == 0 ? null : int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var p) && p is >= -1 and <= 32767
                        ? p : throw new FormatException($"{path}:{number}: PRIORITY must be -1 to 32767"),
                },
                "THRESHOLD" => config with { Threshold = ParseSize(path, number, value) },
                "TOKEN" => config with
                {
                    Token = value.Length == 0 ? null : NetSwap.Protocol.Swap.SwapExportName.IsValidToken(value)
                        ? value : throw new FormatException($"{path}:{number}: TOKEN must be 1-64 characters of A-Z a-z 0-9 . _ -"),
                },
                "TLS" => config with
                {
                    Tls = value.Length == 0 ? "off" : value.ToLowerInvariant() is "off" or "require" or "prefer"
                        ? value.ToLowerInvariant() : throw new FormatException($"{path}:{number}: TLS must be off, require or prefer"),
                },
                "TLS_CERTIFICATES" => config with { TlsCertificates = value.Length == 0 ? null : value },
                _ => throw new FormatException($"{path}:{number}: unknown key '{key}' (known: SWAP, SERVER, SIZE, ENCRYPT, PRIORITY, THRESHOLD, TOKEN, TLS, TLS_CERTIFICATES, NBD_SWAP, NBD_SWAP_SERVER, NBD_SWAP_PORT, ENCRYPT_SWAP)"),
            };
        }
        return config;
    }

    /// <summary>lts.conf's booleans: Y, y, True, true and N, n, False, false (yes/no and 1/0 as well).</summary>
    private static bool LtspBoolean(string path, int number, string key, string value) => value.ToLowerInvariant() switch
    {
        "y" or "true" or "yes" or "1" => true,
        "n" or "false" or "no" or "0" => false,
        _ => throw new FormatException($"{path}:{number}: {key} must be True or False"),
    };

    private static long ParseSize(string path, int number, string value) =>
        NetSwap.Protocol.Swap.SwapExportName.TryParseSize(value, out var bytes) && bytes > 0
            ? bytes
            : throw new FormatException($"{path}:{number}: '{value}' is not a size (examples: 512M, 1G)");

    /// <summary>netswap=host[:port] (or netswap=off) on the kernel command line; the last one counts, as for the kernel.</summary>
    public static string? ServerFromKernelCommandLine(string? commandLine)
    {
        string? found = null;
        foreach (var word in (commandLine ?? "").Split([' ', '\n', '\t'], StringSplitOptions.RemoveEmptyEntries))
        {
            if (word.StartsWith("netswap=", StringComparison.Ordinal) && word.Length > "netswap=".Length)
            {
                found = word["netswap=".Length..];
            }
        }
        return found;
    }

    /// <summary>MemTotal from /proc/meminfo, in bytes.</summary>
    public static long MemTotal(string meminfo = "/proc/meminfo")
    {
        foreach (var line in File.ReadLines(meminfo))
        {
            if (line.StartsWith("MemTotal:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
            }
        }
        return 0;
    }
}
