namespace NetSwap.Server.Hosting;

/// <summary>
/// Reads a file an administrator named in a setting (config file, client list, TLS certificates, keys, CRL): a regular
/// file of at most maxBytes, read by this process. Anything else is an IOException whose message names the path and
/// the reason, never an UnauthorizedAccessException or an unbounded read (a config file symlinked to /dev/zero once
/// took the daemon to 2.7 GB on SIGHUP).
/// </summary>
internal static class SettingFile
{
    public const int DefaultLimit = 1 << 20;

    public static byte[] ReadAllBytes(string path, string what, int maxBytes = DefaultLimit)
    {
        try
        {
            if (!FileKind.IsRegularFile(path))
            {
                throw new IOException($"{what} {path} is not a regular file");
            }
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.None);
            // A regular file's length is what stat says; bytes appended while it is read are not read.
            if (stream.Length > maxBytes)
            {
                throw new IOException($"{what} {path} is larger than {maxBytes} bytes");
            }
            var buffer = new byte[stream.Length];
            return buffer[..stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false)];
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new IOException($"{what} {path} does not exist", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new IOException($"{what} {path} cannot be read by this process: {e.Message}", e);
        }
    }

    public static string ReadAllText(string path, string what, int maxBytes = DefaultLimit) =>
        System.Text.Encoding.UTF8.GetString(ReadAllBytes(path, what, maxBytes));
}
