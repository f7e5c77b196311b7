using System.Collections.Concurrent;

namespace NetSwap.Tests.Support;

/// <summary>
/// Temporary directories that outlive a single test (shared credentials, a daemon's control socket) and are removed
/// when the test process exits, so repeated runs leave nothing behind in /tmp (some hold private keys).
/// </summary>
internal static class Scratch
{
    private static readonly ConcurrentBag<string> s_directories = [];

    static Scratch() => AppDomain.CurrentDomain.ProcessExit += (_, _) => RemoveAll();

    /// <summary>A new directory under the temporary directory, named PREFIX followed by random characters.</summary>
    public static string Directory(string prefix)
    {
        var path = System.IO.Directory.CreateTempSubdirectory(prefix).FullName;
        s_directories.Add(path);
        return path;
    }

    private static void RemoveAll()
    {
        foreach (var path in s_directories)
        {
            try
            {
                System.IO.Directory.Delete(path, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Best effort at exit: a file still open or a mount left by a failed test.
            }
        }
    }
}
