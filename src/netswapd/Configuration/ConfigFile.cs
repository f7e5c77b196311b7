using Tomlyn.Parsing;
using Tomlyn.Syntax;

namespace NetSwap.Daemon.Configuration;

/// <summary>An error in the config file, located by file, line and key.</summary>
internal sealed class ConfigFileException(string path, int line, string? key, string message)
    : Exception(key is null ? $"{path}:{line}: {message}" : $"{path}:{line}: key '{key}': {message}")
{
    public string Path { get; } = path;
    public int Line { get; } = line;
    public string? Key { get; } = key;
}

/// <summary>
/// Reads the TOML config file through Tomlyn's syntax tree (no reflection: native AOT), so every error can name its line.
/// Top-level keys are the settings of <see cref="SettingTable"/>; [exports.NAME] tables are file exports.
/// </summary>
internal static class ConfigFile
{
    public static void Load(string path, DaemonSettings settings)
    {
        string text;
        try
        {
            text = NetSwap.Server.Hosting.SettingFile.ReadAllText(path, "config file");
        }
        catch (IOException e)
        {
            throw new ConfigFileException(path, 0, null, $"cannot read: {e.Message}");
        }
        Apply(text, path, settings);
    }

    public static void Apply(string text, string path, DaemonSettings settings)
    {
        var document = SyntaxParser.Parse(text, path, true);
        if (document.HasErrors)
        {
            var first = document.Diagnostics.First(d => d.Kind == DiagnosticMessageKind.Error);
            throw new ConfigFileException(path, first.Span.Start.Line + 1, null, first.Message);
        }
        foreach (var item in document.KeyValues)
        {
            ApplySetting(path, settings, item);
        }
        foreach (var table in document.Tables)
        {
            var name = KeyPath(table.Name);
            var line = Line(table);
            if (table is TableArraySyntax && name is ["swap-rule"])
            {
                ApplySwapRule(path, settings, table);
                continue;
            }
            if (table is not TableSyntax || name.Count != 2 || name[0] != "exports")
            {
                throw new ConfigFileException(path, line, string.Join('.', name), "unknown table (known: [exports.NAME], [[swap-rule]])");
            }
            ApplyExport(path, settings, name[1], table);
        }
    }

    private static void ApplySetting(string path, DaemonSettings settings, KeyValueSyntax item)
    {
        var key = string.Join('.', KeyPath(item.Key));
        var line = Line(item);
        var spec = SettingTable.Find(key);
        if (spec is null || !spec.InConfigFile)
        {
            throw new ConfigFileException(path, line, key, "unknown setting (see netswapd --help)");
        }
        var values = item.Value is ArraySyntax array
            ? (spec.Repeatable ? array.Items.Select(i => Scalar(path, line, key, i.Value)).ToList() : throw new ConfigFileException(path, line, key, "takes one value, not a list"))
            : [Scalar(path, line, key, item.Value)];
        if (spec.ValueName is null && values is ["false"])
        {
            return;
        }
        foreach (var value in values)
        {
            try
            {
                spec.Apply(settings, value, SettingSource.ConfigFile);
            }
            catch (SettingValueException e)
            {
                throw new ConfigFileException(path, line, key, e.Message);
            }
        }
    }

    private static void ApplyExport(string path, DaemonSettings settings, string name, TableSyntaxBase table)
    {
        string? exportPath = null;
        string? description = null;
        var readOnly = false;
        var tlsOnly = false;
        var rules = new List<NetSwap.Server.Access.AddressRule>();
        foreach (var item in table.Items)
        {
            var key = string.Join('.', KeyPath(item.Key));
            var line = Line(item);
            if (key is "allow" or "deny")
            {
                var values = item.Value is ArraySyntax list
                    ? list.Items.Select(i => Scalar(path, line, $"exports.{name}.{key}", i.Value)).ToList()
                    : [Scalar(path, line, $"exports.{name}.{key}", item.Value)];
                try
                {
                    rules.AddRange(values.Select(v => SettingTable.Rule(v, key == "allow" ? NetSwap.Server.Access.RuleAction.Allow : NetSwap.Server.Access.RuleAction.Deny, SettingSource.ConfigFile)));
                }
                catch (SettingValueException e)
                {
                    throw new ConfigFileException(path, line, $"exports.{name}.{key}", e.Message);
                }
                continue;
            }
            var value = Scalar(path, line, $"exports.{name}.{key}", item.Value);
            try
            {
                switch (key)
                {
                    case "path":
                        exportPath = value;
                        break;
                    case "readonly":
                        readOnly = ValueParsers.Boolean(value);
                        break;
                    case "description":
                        description = value;
                        break;
                    case "tls-only":
                        tlsOnly = ValueParsers.Boolean(value);
                        break;
                    default:
                        throw new SettingValueException("unknown export setting (known: path, readonly, description, allow, deny, tls-only)");
                }
            }
            catch (SettingValueException e)
            {
                throw new ConfigFileException(path, line, $"exports.{name}.{key}", e.Message);
            }
        }
        if (exportPath is null)
        {
            throw new ConfigFileException(path, Line(table), $"exports.{name}", "missing 'path'");
        }
        try
        {
            settings.Exports.Add(SettingTable.ExportFromParts(name, exportPath, readOnly, description) with { Rules = rules, TlsOnly = tlsOnly });
        }
        catch (SettingValueException e)
        {
            throw new ConfigFileException(path, Line(table), $"exports.{name}", e.Message);
        }
    }

    private static void ApplySwapRule(string path, DaemonSettings settings, TableSyntaxBase table)
    {
        string? subnet = null;
        string? size = null;
        foreach (var item in table.Items)
        {
            var key = string.Join('.', KeyPath(item.Key));
            var value = Scalar(path, Line(item), $"swap-rule.{key}", item.Value);
            switch (key)
            {
                case "subnet":
                    subnet = value;
                    break;
                case "size":
                    size = value;
                    break;
                default:
                    throw new ConfigFileException(path, Line(item), $"swap-rule.{key}", "unknown swap-rule setting (known: subnet, size)");
            }
        }
        if (subnet is null || size is null)
        {
            throw new ConfigFileException(path, Line(table), "swap-rule", "needs both 'subnet' and 'size'");
        }
        try
        {
            settings.Swap.Rules.Add(SettingTable.SwapRule(subnet, size));
        }
        catch (SettingValueException e)
        {
            throw new ConfigFileException(path, Line(table), "swap-rule", e.Message);
        }
    }

    private static string Scalar(string path, int line, string key, ValueSyntax? value) => value switch
    {
        StringValueSyntax s => s.Value ?? "",
        IntegerValueSyntax i => i.Value.ToString(System.Globalization.CultureInfo.InvariantCulture),
        BooleanValueSyntax b => b.Value ? "true" : "false",
        _ => throw new ConfigFileException(path, line, key, "expected a string, a number or true/false"),
    };

    private static List<string> KeyPath(KeySyntax? key)
    {
        var parts = new List<string>();
        if (key is null)
        {
            return parts;
        }
        parts.Add(KeyPart(key.Key));
        foreach (var dotted in key.DotKeys)
        {
            parts.Add(KeyPart(dotted.Key));
        }
        return parts;
    }

    private static string KeyPart(BareKeyOrStringValueSyntax? part) => part switch
    {
        BareKeySyntax bare => bare.Key?.Text ?? "",
        StringValueSyntax quoted => quoted.Value ?? "",
        _ => "",
    };

    private static int Line(SyntaxNode node) => node.Span.Start.Line + 1;
}
