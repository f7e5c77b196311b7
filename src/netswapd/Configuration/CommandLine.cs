using System.Text;

namespace NetSwap.Daemon.Configuration;

/// <summary>A usage error: the message names the option and what is wrong with it.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>GNU-style options: --name VALUE, --name=VALUE, -v, -vv, -h.</summary>
internal static class CommandLine
{
    public static List<(SettingSpec Spec, string Value)> Parse(IReadOnlyList<string> args)
    {
        var result = new List<(SettingSpec, string)>();
        for (var i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            if (arg.StartsWith("--", StringComparison.Ordinal) && arg.Length > 2)
            {
                var body = arg[2..];
                string? inline = null;
                var equals = body.IndexOf('=', StringComparison.Ordinal);
                if (equals >= 0)
                {
                    inline = body[(equals + 1)..];
                    body = body[..equals];
                }
                var spec = SettingTable.Find(body) ?? throw new UsageException($"unknown option '--{body}' (see --help)");
                if (spec.ValueName is null)
                {
                    if (inline is not null)
                    {
                        throw new UsageException($"option '--{body}' takes no value");
                    }
                    result.Add((spec, "true"));
                    continue;
                }
                if (inline is null)
                {
                    if (i + 1 >= args.Count)
                    {
                        throw new UsageException($"option '--{body}' needs a value: {spec.ValueName}");
                    }
                    inline = args[++i];
                }
                result.Add((spec, inline));
            }
            else if (arg.StartsWith('-') && arg.Length > 1)
            {
                foreach (var letter in arg[1..])
                {
                    var spec = SettingTable.FindShort(letter) ?? throw new UsageException($"unknown option '-{letter}' (see --help)");
                    if (spec.ValueName is not null)
                    {
                        if (arg.Length != 2 || i + 1 >= args.Count)
                        {
                            throw new UsageException($"option '-{letter}' needs a value: {spec.ValueName}");
                        }
                        result.Add((spec, args[++i]));
                        break;
                    }
                    result.Add((spec, "true"));
                }
            }
            else
            {
                throw new UsageException($"unexpected argument '{arg}' (see --help)");
            }
        }
        return result;
    }

    public static void Apply(DaemonSettings settings, IEnumerable<(SettingSpec Spec, string Value)> parsed)
    {
        foreach (var (spec, value) in parsed)
        {
            try
            {
                spec.Apply(settings, value, SettingSource.CommandLine);
            }
            catch (SettingValueException e)
            {
                throw new UsageException($"option '--{spec.Name}': {e.Message}");
            }
        }
    }

    public static string Help()
    {
        var text = new StringBuilder();
        text.AppendLine("Usage: netswapd [OPTIONS]");
        text.AppendLine("       netswapd status [--json] [--control-socket PATH]   (ask the running daemon; see netswapd status --help)");
        text.AppendLine();
        text.AppendLine("NetSwap server: an NBD server that serves file exports and, per client, swap space on demand.");
        text.AppendLine();
        text.AppendLine("Options (each also a key of the TOML config file unless marked *):");
        foreach (var spec in SettingTable.All)
        {
            var name = (spec.Short != '\0' ? $"-{spec.Short}, " : "    ") + $"--{spec.Name}" + (spec.ValueName is null ? "" : $" {spec.ValueName}");
            var mark = spec.InConfigFile ? " " : "*";
            text.Append("  ").Append(name.PadRight(36)).Append(mark).Append(' ').AppendLine(spec.Help);
        }
        text.AppendLine();
        text.AppendLine("Config file: TOML, keys as above without the dashes; file exports as tables:");
        text.AppendLine("  [exports.NAME]");
        text.AppendLine("  path = \"/srv/disk.img\"     # file or block device");
        text.AppendLine("  readonly = false");
        text.AppendLine("  description = \"text shown to clients\"");
        text.AppendLine();
        text.AppendLine("Signals: SIGTERM/SIGINT stop accepting, finish requests in flight and exit 0. SIGHUP reloads the");
        text.AppendLine("configuration (access rules, limits, client list, TLS credentials), even when started under nohup.");
        text.AppendLine("Exit status: 0 success, 1 runtime or configuration error, 2 usage error.");
        return text.ToString();
    }
}
