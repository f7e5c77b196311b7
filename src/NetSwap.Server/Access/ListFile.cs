namespace NetSwap.Server.Access;

/// <summary>
/// The administrator's list files (--clients, --tls-clients): one entry per line, '#' starts a comment, blank lines
/// are skipped. Entries come with their line number so errors can name it.
/// </summary>
internal static class ListFile
{
    public static IEnumerable<(int Number, string Entry)> Entries(string text)
    {
        var number = 0;
        foreach (var raw in text.Split('\n'))
        {
            number++;
            var line = raw;
            var hash = line.IndexOf('#', StringComparison.Ordinal);
            if (hash >= 0)
            {
                line = line[..hash];
            }
            line = line.Trim();
            if (line.Length > 0)
            {
                yield return (number, line);
            }
        }
    }
}
