using System.Text;

namespace NetSwap.Client.Commands;

/// <summary>One option of a command: its name, the value it takes (null for a flag), the values it allows (for shell
/// completion), and its line in --help.</summary>
internal sealed record OptionSpec(string Name, string? ValueName, string Help, string[]? Values = null);

/// <summary>
/// One command of netswap: its name, what it takes besides options, what it does, its options, and <paramref name="Read"/>,
/// which reads the arguments (a usage error throws) and returns the work, not yet begun. The help, the man page test
/// and shell completion all read this, so they cannot drift from what the command accepts.
/// </summary>
internal sealed record CommandSpec(string Name, string Arguments, string Description, OptionSpec[] Options, Func<ArgumentReader, Func<Task<int>>> Read)
{
    public string Synopsis => $"netswap {Name}{(Arguments.Length > 0 ? " " + Arguments : "")}{(Options.Length > 0 ? " [OPTIONS]" : "")}";

    public string Help()
    {
        var text = new StringBuilder();
        text.Append("Usage: ").AppendLine(Synopsis).AppendLine();
        Wrap(text, Description, "");
        if (Options.Length > 0)
        {
            text.AppendLine().AppendLine("Options:");
            foreach (var option in Options)
            {
                var name = option.Name + (option.ValueName is null ? "" : " " + option.ValueName);
                text.Append("  ").AppendLine(name);
                Wrap(text, option.Help, "        ");
            }
        }
        if (Arguments.Contains("SERVER", StringComparison.Ordinal))
        {
            text.AppendLine();
            Wrap(text, ServerAddress.Note, "");
        }
        return text.ToString();
    }

    /// <summary>Text in lines of at most 100 columns, each after <paramref name="indent"/>.</summary>
    internal static void Wrap(StringBuilder text, string words, string indent)
    {
        var line = new StringBuilder(indent);
        foreach (var word in words.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.Length > indent.Length && line.Length + 1 + word.Length > 100)
            {
                text.AppendLine(line.ToString());
                line.Clear().Append(indent);
            }
            if (line.Length > indent.Length)
            {
                line.Append(' ');
            }
            line.Append(word);
        }
        text.AppendLine(line.ToString());
    }
}
