using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;

namespace NetSwap.Daemon.Configuration;

/// <summary>A usage error: the message names the option and what is wrong with it.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>
/// netswapd's command line (System.CommandLine): every setting of <see cref="SettingTable"/> is an option of the root
/// command, so --help, the config file and the man page cannot drift apart; `status` is a subcommand with its own
/// options and --help. Shell completion comes from System.CommandLine's [suggest] directive.
/// </summary>
internal static class CommandLine
{
    public const string CommandLineOnly = "(command line only)";

    private const string Epilogue = """
        Config file: TOML, keys as the options above without the dashes; file exports as tables:
          [exports.NAME]
          path = "/srv/disk.img"     # file or block device
          readonly = false
          description = "text shown to clients"

        Signals: SIGTERM/SIGINT stop accepting, finish requests in flight and exit 0. SIGHUP reloads the
        configuration (access rules, limits, client list, TLS credentials), even when started under nohup.
        Exit status: 0 success, 1 runtime or configuration error, 2 usage error.

        """;

    /// <summary>The daemon's command: its options (one per setting), `status`, --help, --version.</summary>
    public static (RootCommand Root, Dictionary<Option, SettingSpec> Settings) Build(Func<ParseResult, CancellationToken, Task<int>>? status = null)
    {
        var root = new RootCommand("NetSwap server: an NBD server that serves file exports and, per client, swap space on demand.");
        var settings = new Dictionary<Option, SettingSpec>();
        foreach (var spec in SettingTable.All)
        {
            var description = spec.InConfigFile ? spec.Help : $"{spec.Help} {CommandLineOnly}";
            Option option = spec.ValueName is null
                ? new Option<bool>("--" + spec.Name) { Description = description, Arity = ArgumentArity.Zero }
                : new Option<string[]>("--" + spec.Name) { Description = description, HelpName = spec.ValueName, AllowMultipleArgumentsPerToken = false };
            if (spec.Short != '\0')
            {
                option.Aliases.Add("-" + spec.Short);
            }
            root.Options.Add(option);
            settings[option] = spec;
        }
        root.Subcommands.Add(StatusCommand.Create(status));
        // The daemon itself runs outside System.CommandLine (Daemon.RunAsync); this action only marks "no subcommand,
        // no --help": without one, a root with subcommands would insist on a command.
        root.SetAction(_ => 0);
        foreach (var option in root.Options)
        {
            switch (option)
            {
                case HelpOption help when help.Action is HelpAction standard:
                    help.Action = new HelpWithEpilogue(standard);
                    break;
                case VersionOption version:
                    version.Action = new PrintVersion();
                    break;
            }
        }
        return (root, settings);
    }

    /// <summary>
    /// The settings given on the command line, each with its values in the order given (a flag once per time it
    /// appears: -vv is verbose twice); a usage error names the option or argument that is wrong.
    /// </summary>
    public static List<(SettingSpec Spec, string Value)> Parse(IReadOnlyList<string> args)
    {
        var (root, settings) = Build();
        return Settings(args, root.Parse(args), settings);
    }

    /// <summary>The settings of a parse of <paramref name="args"/> made with <see cref="Build"/>'s command.</summary>
    public static List<(SettingSpec Spec, string Value)> Settings(IReadOnlyList<string> args, ParseResult parse, Dictionary<Option, SettingSpec> settings)
    {
        // --flag=value: System.CommandLine would take the value for a stray argument; say what is wrong instead.
        foreach (var arg in args)
        {
            if (arg.StartsWith("--", StringComparison.Ordinal) && arg.IndexOf('=', StringComparison.Ordinal) is > 2 and var equals
                && SettingTable.Find(arg[2..equals]) is { ValueName: null } flag)
            {
                throw new UsageException($"option '--{flag.Name}' takes no value");
            }
        }
        if (parse.Errors.Count > 0 || parse.UnmatchedTokens.Count > 0)
        {
            throw new UsageException(Describe(parse));
        }
        var result = new List<(SettingSpec, string)>();
        foreach (var child in parse.CommandResult.Children)
        {
            if (child is OptionResult { Implicit: false } option && settings.TryGetValue(option.Option, out var spec))
            {
                if (spec.ValueName is null)
                {
                    result.AddRange(Enumerable.Repeat((spec, "true"), Math.Max(1, option.IdentifierTokenCount)));
                }
                else
                {
                    result.AddRange(option.Tokens.Select(t => (spec, t.Value)));
                }
            }
        }
        return result;
    }

    /// <summary>The first problem of a parse, as one line.</summary>
    public static string Describe(ParseResult parse)
    {
        var help = parse.CommandResult.Command is RootCommand ? "netswapd --help" : $"netswapd {parse.CommandResult.Command.Name} --help";
        if (parse.UnmatchedTokens.Count > 0)
        {
            var token = parse.UnmatchedTokens[0];
            return token.StartsWith('-') ? $"unknown option '{token}' (see {help})" : $"unexpected argument '{token}' (see {help})";
        }
        var error = parse.Errors[0];
        if (error.SymbolResult is OptionResult { Tokens.Count: 0 } option && option.Option.Arity.MinimumNumberOfValues > 0)
        {
            return $"option '{option.Option.Name}' needs a value: {option.Option.HelpName}";
        }
        return string.Join(' ', error.Message.Split(['\n', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
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

    /// <summary>The text of `netswapd --help`.</summary>
    public static string Help()
    {
        var output = new StringWriter();
        Build().Root.Parse(["--help"]).Invoke(new InvocationConfiguration { Output = output });
        return output.ToString();
    }

    /// <summary>System.CommandLine's help, and for netswapd itself what a TOML file looks like, the signals and exit codes.</summary>
    private sealed class HelpWithEpilogue(HelpAction standard) : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            standard.Invoke(parseResult);
            if (parseResult.CommandResult.Command is RootCommand)
            {
                parseResult.InvocationConfiguration.Output.Write(Epilogue);
            }
            return 0;
        }
    }

    private sealed class PrintVersion : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            parseResult.InvocationConfiguration.Output.WriteLine($"netswapd {Daemon.Version}");
            return 0;
        }
    }
}
