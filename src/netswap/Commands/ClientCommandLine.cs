using System.Text;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Client.Commands;

/// <summary>
/// netswap's command line: one command per file in this folder, each a <see cref="CommandSpec"/> with its own options
/// and --help. A usage error is one line on stderr and exit 2; a failure of the work itself one line and exit 1.
/// Shell completion (packaging/completion/netswap) asks `netswap __complete WORDS…` for the next word.
/// Not System.CommandLine, as netswapd uses: linked into this static client it made every netswap process bigger (on
/// the host `discover` 6.8 MiB peak instead of 5.3), the reconnect keeper's locked share in a 32 MiB guest included
/// (2.0 MiB anonymous instead of 1.4, 6.6 MiB resident), and that guest's workload was OOM-killed (README, "netswap").
/// </summary>
internal static class ClientCommandLine
{
    public const int ExitUsage = 2;
    public const string CompleteCommand = "__complete";

    public static readonly CommandSpec[] Commands =
    [
        AttachCommand.Spec,
        DetachCommand.Spec,
        DiscoverCommand.Spec,
        StatusCommand.Spec,
        StatusCommand.ServerStatusSpec,
        ExportsCommand.Spec,
        KeepCommand.Spec,
        new("version", "", "Show the version.", [], _ => () => Task.FromResult(Version())),
        new("help", "[COMMAND]", "Show the help of netswap, or of one command (as COMMAND --help does).", [], reader =>
        {
            reader.EnsureConsumed(maxPositional: 1);
            var topic = reader.Positional.FirstOrDefault();
            return () => HelpAsync(topic);
        }),
    ];

    public static async Task<int> RunAsync(string[] args)
    {
        if (args.Length == 0)
        {
            await Console.Error.WriteLineAsync("netswap: a command is needed (see netswap --help)");
            return ExitUsage;
        }
        if (args[0] is "--help" or "-h")
        {
            return await HelpAsync(null);
        }
        if (args[0] is "--version")
        {
            return Version();
        }
        if (args[0] == CompleteCommand)
        {
            foreach (var word in Complete(args[1..]))
            {
                await Console.Out.WriteLineAsync(word);
            }
            return 0;
        }
        var command = Find(args[0]);
        if (command is null)
        {
            await Console.Error.WriteLineAsync($"netswap: unknown command '{args[0]}' (see netswap --help)");
            return ExitUsage;
        }
        if (args.Skip(1).Any(a => a is "--help" or "-h"))
        {
            await Console.Out.WriteAsync(command.Help());
            return 0;
        }
        try
        {
            var work = command.Read(new ArgumentReader(args[1..]));
            return await work();
        }
        catch (UsageException e)
        {
            await Console.Error.WriteLineAsync($"netswap: {e.Message} (see netswap {command.Name} --help)");
            return ExitUsage;
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or NbdProtocolException or OperationCanceledException
            or Attach.AttachException or FormatException or UnauthorizedAccessException or Kernel.NetlinkException)
        {
            await Console.Error.WriteLineAsync($"netswap: {e.Message}");
            return 1;
        }
    }

    internal static CommandSpec? Find(string name) => Array.Find(Commands, c => c.Name == name);

    private static async Task<int> HelpAsync(string? topic)
    {
        if (topic is null)
        {
            await Console.Out.WriteAsync(Usage());
            return 0;
        }
        if (Find(topic) is not { } command)
        {
            await Console.Error.WriteLineAsync($"netswap: unknown command '{topic}' (see netswap --help)");
            return ExitUsage;
        }
        await Console.Out.WriteAsync(command.Help());
        return 0;
    }

    /// <summary>`netswap --help`: every command with its synopsis and what it does.</summary>
    internal static string Usage()
    {
        var text = new StringBuilder("Usage: netswap COMMAND [OPTIONS]\n\nThe NetSwap client: finds swap servers on the LAN, attaches network swap through the kernel's NBD driver, detaches it.\n\nCommands:\n");
        foreach (var command in Commands)
        {
            text.Append("  ").AppendLine(command.Synopsis);
            CommandSpec.Wrap(text, command.Description, "        ");
        }
        text.AppendLine().AppendLine("`netswap COMMAND --help` (or `netswap help COMMAND`) shows a command's options.");
        return text.ToString();
    }

    /// <summary>
    /// The words that may come next after <paramref name="words"/> (what precedes the word being completed): the
    /// commands first, then the command's options, or the values of the option just given when it names them.
    /// </summary>
    internal static IEnumerable<string> Complete(string[] words)
    {
        if (words.Length == 0)
        {
            return Commands.Select(c => c.Name);
        }
        if (Find(words[0]) is not { } command)
        {
            return [];
        }
        if (command.Name == "help")
        {
            return words.Length == 1 ? Commands.Select(c => c.Name) : [];
        }
        var previous = Array.Find(command.Options, o => o.Name == words[^1]);
        if (words.Length > 1 && previous?.ValueName is not null)
        {
            return previous.Values ?? [];
        }
        return command.Options.Select(o => o.Name).Append("--help");
    }

    private static int Version()
    {
        Console.Out.WriteLine($"netswap {typeof(ClientCommandLine).Assembly.GetName().Version?.ToString(3)}");
        return 0;
    }
}
