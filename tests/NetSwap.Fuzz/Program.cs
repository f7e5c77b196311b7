using NetSwap.Fuzz;
using SharpFuzz;

// AFL entry point: `dotnet NetSwap.Fuzz.dll parsers|connection` under afl-fuzz after instrumenting the server
// assemblies with sharpfuzz (see docs/protocol.md, "Fuzzing").
var target = args.Length > 0 ? args[0] : "connection";
Fuzzer.OutOfProcess.Run(stream =>
{
    using var memory = new MemoryStream();
    stream.CopyTo(memory);
    if (target == "parsers")
    {
        FuzzTargets.Parsers(memory.ToArray());
    }
    else
    {
        _ = FuzzTargets.Connection(memory.ToArray());
    }
});
