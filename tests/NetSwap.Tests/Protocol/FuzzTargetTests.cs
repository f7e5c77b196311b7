using NetSwap.Fuzz;
using NetSwap.Protocol.Nbd;

namespace NetSwap.Tests.Protocol;

/// <summary>
/// Keeps the SharpFuzz targets compiling and runs them on a seed corpus and its mutations (Garnet's FuzzTargetTests):
/// every truncation of a valid session, byte flips, and random bytes. A crash, hang or logged failure fails the test.
/// </summary>
public class FuzzTargetTests
{
    /// <summary>A complete valid session: flags, structured replies, GO, then one of every command, then DISC.</summary>
    internal static byte[] ValidSession()
    {
        var bytes = new List<byte>();
        bytes.AddRange(new byte[] { 0, 0, 0, 3 });
        void Option(NbdOption option, byte[] data)
        {
            var header = new byte[NbdOptionHeader.Size];
            new NbdOptionHeader(option, (uint)data.Length).Write(header);
            bytes.AddRange(header);
            bytes.AddRange(data);
        }
        void Request(NbdCommand command, NbdCommandFlags flags, ulong offset, uint length, int payload = 0)
        {
            var header = new byte[NbdRequest.Size];
            new NbdRequest(flags, command, (ulong)bytes.Count, offset, length).Write(header);
            bytes.AddRange(header);
            bytes.AddRange(new byte[payload]);
        }
        Option(NbdOption.List, []);
        Option(NbdOption.StructuredReply, []);
        var go = new NbdInfoRequest("faulty", [NbdInfoType.Name, NbdInfoType.BlockSize]);
        var goData = new byte[go.SerializedLength];
        go.Write(goData);
        Option(NbdOption.Info, goData);
        Option(NbdOption.Go, goData);
        Request(NbdCommand.Write, NbdCommandFlags.Fua, 4096, 700, 700);
        Request(NbdCommand.Read, 0, 0, 70000);
        Request(NbdCommand.Read, NbdCommandFlags.DontFragment, 510 * 1024, 8192);
        Request(NbdCommand.Flush, 0, 0, 0);
        Request(NbdCommand.Trim, 0, 0, 4096);
        Request(NbdCommand.WriteZeroes, NbdCommandFlags.NoHole | NbdCommandFlags.FastZero, 8192, 4096);
        Request(NbdCommand.Cache, 0, 0, 4096);
        Request(NbdCommand.Write, 0, 1024 * 1024 - 10, 20, 20);
        Request(NbdCommand.Read, 0, 1024 * 1024, 1);
        Request(NbdCommand.Disc, 0, 0, 0);
        return [.. bytes];
    }

    [Fact]
    public void Parsers_SurviveRandomAndCraftedInput()
    {
        var random = new Random(12345);
        for (var i = 0; i < 20000; i++)
        {
            var data = new byte[random.Next(0, 64)];
            random.NextBytes(data);
            if (i % 3 == 0 && data.Length >= 4)
            {
                data[0] = 0x25; data[1] = 0x60; data[2] = 0x95; data[3] = 0x13;  // request magic: reach the validator
            }
            FuzzTargets.Parsers(data);
        }
    }

    [Fact]
    public void Connection_SurvivesEveryTruncationOfAValidSession()
    {
        var session = ValidSession();
        for (var length = 0; length <= session.Length; length += length < 400 ? 1 : 97)
        {
            _ = FuzzTargets.Connection(session.AsSpan(0, length));
        }
        // The whole session reaches transmission: its 700-byte FUA write lands (the 20-byte one is out of range).
        Assert.Equal(700, FuzzTargets.Connection(session));
    }

    [Fact]
    public void Connection_SurvivesMutationsAndRandomBytes()
    {
        var session = ValidSession();
        var random = new Random(777);
        for (var i = 0; i < 400; i++)
        {
            var mutated = (byte[])session.Clone();
            for (var flips = random.Next(1, 6); flips > 0; flips--)
            {
                mutated[random.Next(mutated.Length)] = (byte)random.Next(256);
            }
            _ = FuzzTargets.Connection(mutated);
        }
        for (var i = 0; i < 100; i++)
        {
            var noise = new byte[random.Next(0, 2048)];
            random.NextBytes(noise);
            _ = FuzzTargets.Connection(noise);
        }
    }

    /// <summary>Inputs AFL++ found (docs/protocol.md, "Fuzzing"), kept as regression tests, with what each broke.</summary>
    [Fact]
    public void Connection_FinishesOnInputsTheFuzzerFound()
    {
        // Simple replies, a 577 KiB read that crosses the export's failing range after its header went out (the server
        // must cut the connection), then NBD_CMD_DISC: the connection hung for good, its clean-up never reached.
        var bytes = new List<byte> { 0, 0, 0, 3 };
        var go = new NbdInfoRequest("faulty", []);
        var goData = new byte[go.SerializedLength];
        go.Write(goData);
        var header = new byte[NbdOptionHeader.Size];
        new NbdOptionHeader(NbdOption.Go, (uint)goData.Length).Write(header);
        bytes.AddRange(header);
        bytes.AddRange(goData);
        var request = new byte[NbdRequest.Size];
        new NbdRequest(0, NbdCommand.Read, 1, 0, 590848).Write(request);
        bytes.AddRange(request);
        new NbdRequest(0, NbdCommand.Disc, 2, 0, 0).Write(request);
        bytes.AddRange(request);
        _ = FuzzTargets.Connection(bytes.ToArray());
    }

    /// <summary>The seed corpus of `make fuzz` (tests/NetSwap.Fuzz/corpus) through both targets: every seed runs clean.</summary>
    [Fact]
    public void BothTargets_RunCleanOnEverySeedOfTheCorpus()
    {
        var corpus = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "NetSwap.Fuzz", "corpus"));
        var seeds = Directory.GetFiles(corpus);
        Assert.True(seeds.Length >= 5, $"no seed corpus in {corpus}");
        foreach (var seed in seeds)
        {
            var data = File.ReadAllBytes(seed);
            FuzzTargets.Parsers(data);
            _ = FuzzTargets.Connection(data);
        }
    }
}
