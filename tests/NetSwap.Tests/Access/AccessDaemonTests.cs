using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using NetSwap.Protocol.Nbd;
using NetSwap.Tests.Support;
using Xunit.Abstractions;

namespace NetSwap.Tests.Access;

/// <summary>Access rules and limits on netswapd as a process: SIGHUP reloads, and a connection flood.</summary>
public class AccessDaemonTests(ITestOutputHelper output)
{
    private const long MiB = 1L << 20;

    private static async Task<NbdOptionReplyType> GoAsync(int port, string source, string export)
    {
        await using var client = await ServerHarness.ConnectAsync(port, source, "127.0.0.1");
        await client.StartAsync();
        return (await client.InfoOrGoAsync(NbdOption.Go, export)).Final;
    }

    [Fact]
    public async Task Sighup_ChangesTheOutcomeForTheNextConnectionOnly_AndRejectsABrokenFile()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        var config = Path.Combine(fs.Path, "netswapd.toml");
        var swapDir = Path.Combine(fs.Path, "swap");
        await File.WriteAllTextAsync(config, $"listen = [\"127.0.0.1:0\"]\nswap-dir = \"{swapDir}\"\nswap-size = \"8M\"\nallow = [\"127.0.0.0/8\"]\n");
        await using var daemon = DaemonProcess.Start("--config", config);
        var port = await daemon.WaitForPortAsync();

        await using var connected = await ServerHarness.ConnectAsync(port, "127.0.0.80", "127.0.0.1");
        await connected.StartAsync();
        await connected.GoAsync("swap/kept");
        Assert.Equal(NbdOptionReplyType.Ack, await GoAsync(port, "127.0.0.81", "swap:8M"));

        await File.WriteAllTextAsync(config, $"listen = [\"127.0.0.1:0\"]\nswap-dir = \"{swapDir}\"\nswap-size = \"8M\"\nallow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.80/31\"]\n");
        daemon.Signal(1);
        Assert.True(await daemon.WaitForLogAsync("configuration reloaded"), daemon.Stderr);
        Assert.True(await daemon.WaitForLogAsync("access: deny 127.0.0.80/31"), daemon.Stderr);
        // The connected client keeps working; the next connection from the same lab is refused.
        var data = new byte[65536];
        Random.Shared.NextBytes(data);
        Assert.Equal(NbdError.None, (await connected.RequestAsync(NbdCommand.Write, 4096, 65536, payload: data)).Error);
        Assert.Equal(data, (await connected.RequestAsync(NbdCommand.Read, 4096, 65536)).Data);
        Assert.Equal(NbdOptionReplyType.ErrPolicy, await GoAsync(port, "127.0.0.81", "swap:8M"));
        Assert.Equal(NbdOptionReplyType.Ack, await GoAsync(port, "127.0.0.82", "swap:8M"));

        await File.WriteAllTextAsync(config, "allow = [\"127.0.0.0/8\"]\n\nmax-clients = \"lots\"\n");
        daemon.Signal(1);
        Assert.True(await daemon.WaitForLogAsync($"new configuration rejected, the previous one stays in force: {config}:3: key 'max-clients'"), daemon.Stderr);
        Assert.Equal(NbdOptionReplyType.ErrPolicy, await GoAsync(port, "127.0.0.81", "swap:8M"));
        Assert.Equal(NbdError.None, (await connected.RequestAsync(NbdCommand.Read, 4096, 4096)).Error);
        Assert.False(daemon.HasExited);
    }

    [Fact]
    public async Task Flood_OfTenThousandConnections_LeavesALegitimateClientWorking_AndMemoryBounded()
    {
        await using var fs = await TmpfsMount.CreateAsync(256 * MiB);
        await using var daemon = DaemonProcess.Start("--listen", "127.0.0.1:0", "--swap-dir", fs.Path, "--swap-size", "64M",
            "--allow", "127.0.0.0/8", "--handshake-timeout", "2s");
        var port = await daemon.WaitForPortAsync();
        var rssBefore = Rss(daemon.Pid);

        // The legitimate client: qemu-io writing and verifying patterns for the whole flood.
        var commands = new List<string> { "-f", "raw" };
        for (var i = 0; i < 40; i++)
        {
            commands.AddRange(["-c", $"write -P {i % 250 + 1} {i * 512 * 1024} 512k", "-c", $"read -P {i % 250 + 1} {i * 512 * 1024} 512k", "-c", "sleep 100"]);
        }
        commands.Add($"nbd://127.0.0.1:{port}/swap/legit");
        var legit = ExternalTool.RunAsync("qemu-io", commands, TimeSpan.FromMinutes(3));

        var flood = Stopwatch.StartNew();
        var attempts = 0;
        var rssPeak = rssBefore;
        await Parallel.ForEachAsync(Enumerable.Range(0, 10_000), new ParallelOptions { MaxDegreeOfParallelism = 64 }, async (i, ct) =>
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(IPAddress.Parse("127.0.0.99"), 0));
            try
            {
                await socket.ConnectAsync(IPAddress.Loopback, port, ct);
                // Half the flood also starts a handshake and stalls, holding what a stalled client can hold.
                if (i % 2 == 0)
                {
                    await socket.SendAsync(new byte[] { 0, 0, 0, 3 }, ct);
                }
                socket.LingerState = new LingerOption(true, 0);
            }
            catch (SocketException)
            {
            }
            if (Interlocked.Increment(ref attempts) % 1000 == 0)
            {
                rssPeak = Math.Max(rssPeak, Rss(daemon.Pid));
            }
        });
        flood.Stop();
        var result = await legit;
        var rssAfter = Rss(daemon.Pid);
        output.WriteLine($"flood: {attempts} connection attempts in {flood.Elapsed.TotalSeconds:F1} s; netswapd RSS {rssBefore / MiB} MiB before, {rssPeak / MiB} MiB peak, {rssAfter / MiB} MiB after");
        Assert.True(result.ExitCode == 0, result.All);
        Assert.DoesNotContain("fail", result.All, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("read 524288/524288 bytes at offset 20447232", result.Stdout);
        Assert.True(rssPeak - rssBefore < 64 * MiB, $"RSS grew by {(rssPeak - rssBefore) / MiB} MiB under the flood");
        Assert.True(await daemon.WaitForLogAsync("over connection-rate", TimeSpan.FromSeconds(15)), "refusals are summed up in the log");
        Assert.False(daemon.HasExited);
    }

    private static long Rss(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
            }
        }
        return 0;
    }
}
