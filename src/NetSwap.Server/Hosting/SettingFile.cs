namespace NetSwap.Server.Hosting;

/// <summary>
/// Reads a file an administrator named in a setting (config file, client list, TLS certificates, keys, CRL): a regular
/// file, at most <paramref name="maxBytes"/>, read by this process. Anything else is an IOException whose message names
/// the path and the reason, never an UnauthorizedAccessException or an unbounded read (a config file symlinked to
/// /dev/zero once took the daemon to 2.7 GB on SIGHUP).
/// </summary>
internal static class SettingFile
{
    public const int DefaultLimit = 1 << 20;

    public static byte[] ReadAllBytes(string path, string what, int maxBytes = DefaultLimit)
    {
        try
        {
            if (!File.Exists(path))
            {
                throw new IOException($"{what} {path} does not exist");
            }
            if (!FileKind.IsRegularFile(path))
            {
                throw new IOException($"{what} {path} is not a regular file");
            }
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.None);
            var buffer = new byte[Math.Min(maxBytes + 1, Math.Max(stream.Length + 1, 4096))];
            var total = 0;
            while (true)
            {
                if (total == buffer.Length)
                {
                    if (total > maxBytes)
                    {
                        throw new IOException($"{what} {path} is larger than {maxBytes} bytes");
                    }
                    Array.Resize(ref buffer, Math.Min(maxBytes + 1, buffer.Length * 2));
                }
                var n = stream.Read(buffer, total, buffer.Length - total);
                if (n == 0)
                {
                    break;
                }
                total += n;
            }
            if (total > maxBytes)
            {
                throw new IOException($"{what} {path} is larger than {maxBytes} bytes");
            }
            return buffer[..total];
        }
        catch (UnauthorizedAccessException e)
        {
            throw new IOException($"{what} {path} cannot be read by this process: {e.Message}", e);
        }
    }

    public static string ReadAllText(string path, string what, int maxBytes = DefaultLimit) =>
        System.Text.Encoding.UTF8.GetString(ReadAllBytes(path, what, maxBytes));
}
