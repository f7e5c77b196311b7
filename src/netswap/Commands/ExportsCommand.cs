using System.Globalization;
using System.Text.Json;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Client.Commands;

/// <summary>`netswap exports SERVER`: what a server offers (NBD_OPT_LIST, then NBD_OPT_INFO for each).</summary>
internal static class ExportsCommand
{
    public static readonly CommandSpec Spec = new("exports", "SERVER[:PORT]",
        "List the exports a server offers (name, size, flags, description).",
        [new("--json", null, "Write JSON instead of text.")],
        reader =>
        {
            var json = reader.Flag("--json");
            reader.EnsureConsumed(maxPositional: 1);
            return reader.Positional is [var server] ? () => RunAsync(server, json) : throw new UsageException("exports needs SERVER[:PORT]");
        });

    private static async Task<int> RunAsync(string serverText, bool json)
    {
        var server = ServerAddress.Parse(serverText);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await using var probe = await NbdProbe.ConnectAsync(server, cts.Token);
        var exports = await probe.ListAsync(cts.Token);
        if (json)
        {
            var rows = exports.Select(e => new ExportJson(e.Name, e.Size, e.Flags.HasFlag(NbdTransmissionFlags.ReadOnly), e.Flags.HasFlag(NbdTransmissionFlags.CanMultiConn), e.Description)).ToList();
            await Console.Out.WriteLineAsync(JsonSerializer.Serialize(rows, ClientJsonContext.Default.ListExportJson));
            return 0;
        }
        foreach (var e in exports)
        {
            await Console.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"{e.Name}\t{e.Size}\t{e.Flags}\t{e.Description}"));
        }
        return 0;
    }
}
