using System.Diagnostics;
using Migration.RaceFuzzer.Tests.Harness;
using Migration.RaceFuzzer.Tests.Mutants;
using Xunit.Abstractions;

namespace Migration.RaceFuzzer.Tests;

/// <summary>
/// Each race of the catalogue, switched on as a mutant, is caught within <see cref="RaceFuzzerTests.MutantSeedBound"/>
/// seeds. The catalogue is split over three test classes (every third entry, so the slow ones spread), which xUnit runs
/// in parallel: one seed is a single-threaded, latency-bound run, and on two cores one class alone left a core idle.
/// </summary>
public static class MutantTests
{
    private const int Shares = 3;

    public static TheoryData<Mutant> Share(int share)
    {
        var data = new TheoryData<Mutant>();
        for (int i = share; i < Mutant.All.Count; i += Shares)
        {
            data.Add(Mutant.All[i]);
        }

        return data;
    }

    private static void CaughtWithinBoundedSeeds(Mutant mutant, ITestOutputHelper output)
    {
        ArgumentNullException.ThrowIfNull(mutant);
        // FUZZ_MUTANT=R13 (or R13,R15) runs only those entries: with FUZZ_SEEDS, one mutant's seed replays alone.
        if (Environment.GetEnvironmentVariable("FUZZ_MUTANT") is { Length: > 0 } only
            && !only.Split(',').Contains(mutant.Race, StringComparer.OrdinalIgnoreCase))
        {
            return;
        }

        var sw = Stopwatch.StartNew();
        foreach (int seed in RaceFuzzerTests.Seeds(RaceFuzzerTests.MutantSeedBound))
        {
            var outcome = FuzzHarness.Run(seed, mutant.Profile, mutant);
            if (outcome.Caught)
            {
                output.WriteLine($"{mutant}: caught at seed {seed} ({sw.Elapsed.TotalSeconds:F1} s): {outcome}");
                return;
            }
        }

        Assert.Fail($"mutant {mutant} survived {RaceFuzzerTests.MutantSeedBound} seeds of {mutant.Profile}");
    }

    public sealed class FirstShare(ITestOutputHelper output)
    {
        [Theory]
        [MemberData(nameof(Share), 0, MemberType = typeof(MutantTests))]
        public void Mutant_IsCaughtWithinBoundedSeeds(Mutant mutant) => CaughtWithinBoundedSeeds(mutant, output);
    }

    public sealed class SecondShare(ITestOutputHelper output)
    {
        [Theory]
        [MemberData(nameof(Share), 1, MemberType = typeof(MutantTests))]
        public void Mutant_IsCaughtWithinBoundedSeeds(Mutant mutant) => CaughtWithinBoundedSeeds(mutant, output);
    }

    public sealed class ThirdShare(ITestOutputHelper output)
    {
        [Theory]
        [MemberData(nameof(Share), 2, MemberType = typeof(MutantTests))]
        public void Mutant_IsCaughtWithinBoundedSeeds(Mutant mutant) => CaughtWithinBoundedSeeds(mutant, output);
    }
}
