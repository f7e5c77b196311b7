namespace NetSwap.Client.Commands;

/// <summary>`netswap keep`: the resident reconnect keeper that `attach` starts (Attach/Keeper.cs does the work).</summary>
internal static class KeepCommand
{
    public static readonly CommandSpec Spec = new("keep", "",
        "The resident reconnect keeper `attach` starts (not for direct use): locked in memory, logs to the kernel log.",
        [
            new("--device", "/dev/nbdN", "The NBD device to keep connected (required)."),
            new("--server", "ADDRESS:PORT", "The server it is connected to (required)."),
            new("--export", "NAME", "The export it is connected to, swap/TOKEN (required)."),
            new("--reconnect-for", "DURATION", "How long the kernel holds requests while a broken connection is replaced. Default: 2m."),
            new("--ready-file", "PATH", "Write the keeper's process ID here once it is ready."),
            new("--tls-certificates", "DIR", "Reconnect over TLS with the credentials in DIR (ca-cert.pem, client-cert.pem, client-key.pem), handing each new connection to the kernel as kernel TLS."),
        ],
        reader =>
        {
            var device = reader.Value("--device") ?? throw new UsageException("keep needs --device /dev/nbdN");
            var server = reader.Value("--server") ?? throw new UsageException("keep needs --server ADDRESS:PORT");
            var export = reader.Value("--export") ?? throw new UsageException("keep needs --export NAME");
            var reconnectFor = reader.Duration("--reconnect-for", Attach.AttachRequest.DefaultReconnectFor);
            var readyFile = reader.Value("--ready-file");
            var tls = reader.Value("--tls-certificates") is { } directory ? Tls.TlsCredentials.FromDirectory(directory) : null;
            reader.EnsureConsumed();
            return () => Attach.Keeper.RunAsync(device, server, export, reconnectFor, readyFile, tls);
        });
}
