using System.Text.RegularExpressions;

namespace NetSwap.Tests.Server;

/// <summary>
/// The server's shape, held by its source: each concern has one owner (docs/design.md, "Stages and owners"), and a
/// change that puts a concern back in a second place fails here, naming the file and line.
/// </summary>
public partial class StructureTests
{
    private static readonly string Root = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", ".."));
    private static readonly string Server = Path.Combine(Root, "src", "NetSwap.Server");

    private static IEnumerable<(string File, int Line, string Text)> Lines(string directory) =>
        Directory.EnumerateFiles(directory, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .SelectMany(f => File.ReadLines(f).Select((text, i) => (Path.GetRelativePath(Server, f), i + 1, text)))
            // Comments may name anything: only code counts.
            .Where(l => !l.Item3.TrimStart().StartsWith("//", StringComparison.Ordinal));

    /// <summary>Code lines of the server that contain <paramref name="needle"/>, outside the files or folders allowed.</summary>
    private static List<string> Outside(string needle, params string[] allowed) =>
        [.. Lines(Server)
            .Where(l => l.Text.Contains(needle, StringComparison.Ordinal))
            .Where(l => !allowed.Any(a => l.File.Replace('\\', '/').StartsWith(a, StringComparison.Ordinal)))
            .Select(l => $"{l.File}:{l.Line}: {l.Text.Trim()}")];

    [Fact]
    public void TheSocketType_IsNamedOnlyByTheTransport_AndWhereSocketsAreAccepted()
    {
        // The request loop sees ILoopAffinity, the writer and reader IDirectSocket: never the concrete socket.
        Assert.Empty(Outside("ReactorStream", "Transport/", "Hosting/NbdServer.cs"));
    }

    [Fact]
    public void ReplyFraming_LivesInTheReplyWriterOnly()
    {
        Assert.Empty(Outside("new NbdSimpleReply(", "Transmission/ReplyWriter.cs"));
        Assert.Empty(Outside("new NbdStructuredReplyHeader(", "Transmission/ReplyWriter.cs"));
    }

    [Fact]
    public void AdmissionRules_AreAskedOfTheGateOnly()
    {
        Assert.Empty(Outside("CheckClient(", "Access/"));
        Assert.Empty(Outside("CheckExport(", "Access/"));
        Assert.Empty(Outside("TlsOnlyExports", "Access/", "Tls/"));
        Assert.Empty(Outside("TryEnterExport(", "Access/", "Handshake/OptionNegotiator.cs"));
    }

    [Fact]
    public void APerExportPlace_IsGivenBackByTheLease_OrWhereTheAttachItGuardedFailed()
    {
        Assert.Equal(["Handshake/OptionNegotiator.cs", "Hosting/ExportLease.cs"],
            Outside("LeaveExport(", "Access/").Select(l => l[..l.IndexOf(':', StringComparison.Ordinal)]).Order().ToArray());
    }

    [Fact]
    public void TransferredBytes_AreCountedInOnePlaceEach()
    {
        Assert.Single(Lines(Server), l => l.Text.Contains("Interlocked.Add(ref _bytesRead", StringComparison.Ordinal));
        Assert.Single(Lines(Server), l => l.Text.Contains("Interlocked.Add(ref _bytesWritten", StringComparison.Ordinal));
    }

    [Fact]
    public void SwapAreaState_ChangesOnlyInTheArea()
    {
        Assert.Empty(Outside("State = SwapAreaState.", "Exports/Swap/SwapArea.cs"));
    }

    [Theory]
    [InlineData("NetSwap.Server", "NetSwap.Server")]
    [InlineData("NetSwap.Protocol", "NetSwap.Protocol")]
    [InlineData("netswapd", "NetSwap.Daemon")]
    public void EachNamespace_MatchesItsFolder(string project, string rootNamespace)
    {
        var directory = Path.Combine(Root, "src", project);
        var wrong = new List<string>();
        foreach (var file in Directory.EnumerateFiles(directory, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)))
        {
            var declared = NamespaceLine().Match(File.ReadAllText(file));
            if (!declared.Success && Path.GetFileName(file) == "Program.cs")
            {
                // Top-level statements: the program's entry has no namespace of its own.
                continue;
            }
            var folder = Path.GetRelativePath(directory, Path.GetDirectoryName(file)!);
            var expected = folder == "." ? rootNamespace : rootNamespace + "." + folder.Replace(Path.DirectorySeparatorChar, '.');
            if (!declared.Success || declared.Groups[1].Value != expected)
            {
                wrong.Add($"{Path.GetRelativePath(Root, file)}: {(declared.Success ? declared.Groups[1].Value : "(none)")}, folder says {expected}");
            }
        }
        Assert.Empty(wrong);
    }

    [GeneratedRegex(@"^namespace\s+([\w.]+)\s*;", RegexOptions.Multiline)]
    private static partial Regex NamespaceLine();
}
