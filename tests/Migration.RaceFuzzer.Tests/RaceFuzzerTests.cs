using System.Diagnostics;
using Migration.Shared.Concurrency;
using Xunit.Abstractions;

namespace Migration.RaceFuzzer.Tests;

/// <summary>
/// The fuzzer's contract: the correct engine survives many seeds in every allowed configuration, and each race of the
/// catalogue, switched on as a mutant, is caught within a bounded number of seeds. Seeds replay with FUZZ_SEEDS.
/// </summary>
public sealed class RaceFuzzerTests(ITestOutputHelper output)
{
    /// <summary>Seeds each mutant gets before the test calls the fuzzer too weak.</summary>
    private const int MutantSeedBound = 1500;

    private static IEnumerable<int> Seeds(int count)
    {
        string? fixedSeeds = Environment.GetEnvironmentVariable("FUZZ_SEEDS");
        if (string.IsNullOrEmpty(fixedSeeds))
        {
            return Enumerable.Range(1, count);
        }

        var parts = fixedSeeds.Split('-');
        int first = int.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture);
        int last = parts.Length > 1 ? int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture) : first;
        return Enumerable.Range(first, last - first + 1);
    }

    [Theory]
    [InlineData(Family.EagerNoAck)]
    [InlineData(Family.EagerWaitOnAck)]
    [InlineData(Family.ManualWaitOnAck)]
    public void CorrectEngine_SurvivesManySeeds(Family family)
    {
        var sw = Stopwatch.StartNew();
        int runs = 0;
        long unfinished = 0;
        foreach (int seed in Seeds(120))
        {
            var outcome = FuzzHarness.Run(seed, family);
            runs++;
            Assert.False(outcome.Caught, $"correct engine failed: {outcome}");
            unfinished += outcome.Finished ? 0 : 1;
        }

        output.WriteLine($"{family}: {runs} seeds survived in {sw.Elapsed.TotalSeconds:F1} s ({runs / sw.Elapsed.TotalSeconds:F1} seeds/s), {unfinished} hit the step limit");
        Assert.True(unfinished <= runs / 10, $"{unfinished} of {runs} seeds did not finish: the harness is not exercising migrations");
    }

    public static TheoryData<Mutation, Family> Mutants => new()
    {
        { Mutation.AcceptStaleIds, Family.EagerNoAck },
        { Mutation.SkipStopBeforeSync, Family.EagerNoAck },
        { Mutation.HintBeforeLogging, Family.EagerNoAck },
        { Mutation.HintClearsWriteLog, Family.EagerNoAck },
        { Mutation.ApplyWhileStopped, Family.EagerNoAck },
        { Mutation.ManualWithoutWaitOnAck, Family.ManualNoAck },
        { Mutation.HintWithoutChunkClear, Family.ManualWaitOnAck },
        { Mutation.MarkBeforeStore, Family.EagerWaitOnAck },
        { Mutation.NonAtomicSync, Family.EagerWaitOnAck },
        { Mutation.HonourReplayedStart, Family.EagerNoAck },
        { Mutation.OutOfOrderChannels, Family.EagerWaitOnAck },
        { Mutation.ReleaseWithoutPoison, Family.EagerWaitOnAck },
    };

    [Theory]
    [MemberData(nameof(Mutants))]
    public void Mutant_IsCaughtWithinBoundedSeeds(Mutation mutation, Family family)
    {
        var sw = Stopwatch.StartNew();
        foreach (int seed in Seeds(MutantSeedBound))
        {
            var outcome = FuzzHarness.Run(seed, family, mutation);
            if (outcome.Caught)
            {
                output.WriteLine($"{mutation}: caught at seed {seed} ({seed} seeds, {sw.Elapsed.TotalSeconds:F1} s): {outcome}");
                return;
            }
        }

        Assert.Fail($"mutant {mutation} survived {MutantSeedBound} seeds of {family}");
    }
}
