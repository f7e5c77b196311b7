namespace NetSwap.Tests.Support;

/// <summary>
/// Tests that time the server (a rate it must reach, an answer within a window) run alone, after the parallel test
/// classes, one at a time (xunit runs collections that disable parallelization on their own): a test host busy with
/// other test classes can stall a process for longer than any bound such a test can set.
/// </summary>
[CollectionDefinition(nameof(TimingCollection), DisableParallelization = true)]
public sealed class TimingCollection;
