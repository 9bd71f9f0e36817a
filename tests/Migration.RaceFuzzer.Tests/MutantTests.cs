using System.Diagnostics;
using Migration.RaceFuzzer.Tests.Harness;
using Migration.RaceFuzzer.Tests.Mutants;
using Xunit.Abstractions;

namespace Migration.RaceFuzzer.Tests;

/// <summary>
/// Each race of the catalogue, switched on as a mutant, is caught within <see cref="RaceFuzzerTests.MutantSeedBound"/>
/// seeds, its corpus seed first. The catalogue is split over three test classes (every third entry, so the slow ones spread), which xUnit runs
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

    /// <summary>
    /// Each mutant's corpus seed: the first seed that caught it in the last full sweep (docs/testing.md). The suite
    /// tries it first, then sweeps the rest of the bound, so a harness change that moves the catch costs time, not a
    /// false failure (the output then names the new seed). FUZZ_SWEEP=1 ignores the corpus and sweeps from seed 1:
    /// the fuzzer's strength, seeds to first catch, as the table reports it.
    /// </summary>
    internal static readonly IReadOnlyDictionary<string, int> Corpus = new Dictionary<string, int>
    {
        ["R1"] = 161,
        ["R2"] = 264,
        ["R3"] = 443,
        ["R4"] = 5,
        ["R5"] = 190,
        ["R6"] = 30,
        ["R7"] = 9,
        ["R8"] = 1,
        ["R9"] = 271,
        ["R10"] = 301,
        ["R11"] = 111,
        ["R12"] = 6,
        ["R13"] = 1,
        ["R14"] = 1,
        ["R15"] = 1,
        ["R16"] = 34,
        ["R17"] = 1,
        ["R18"] = 118,
        ["R20"] = 70,
        ["R21"] = 1,
        ["R22"] = 2,
        ["R24"] = 6,
        ["R25"] = 43,
        ["R26"] = 23,
    };

    /// <summary>The seeds a mutant gets, in order: its corpus seed, then the rest of the bound.</summary>
    internal static IEnumerable<int> SeedsFor(Mutant mutant)
    {
        var bounded = RaceFuzzerTests.Seeds(RaceFuzzerTests.MutantSeedBound);
        bool sweep = Environment.GetEnvironmentVariable("FUZZ_SWEEP") == "1"
            || Environment.GetEnvironmentVariable("FUZZ_SEEDS") is { Length: > 0 };
        if (sweep || !Corpus.TryGetValue(mutant.Race, out int first))
        {
            return bounded;
        }

        return bounded.Contains(first) ? bounded.Where(s => s != first).Prepend(first) : bounded;
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
        int tried = 0;
        foreach (int seed in SeedsFor(mutant))
        {
            tried++;
            var outcome = FuzzHarness.Run(seed, mutant.Profile, mutant);
            if (outcome.Caught)
            {
                AssertTheDefenceHolds(mutant, seed);
                string moved = tried > 1 && Corpus.TryGetValue(mutant.Race, out int corpus) && corpus != seed
                    ? $" (its corpus seed {corpus} no longer catches it: update MutantTests.Corpus)"
                    : string.Empty;
                output.WriteLine($"{mutant}: caught at seed {seed} after {tried} seeds " +
                    $"({sw.Elapsed.TotalSeconds:F1} s){moved}: {outcome}");
                return;
            }
        }

        Assert.Fail($"mutant {mutant} survived {RaceFuzzerTests.MutantSeedBound} seeds of {mutant.Profile}");
    }

    /// <summary>
    /// The same schedule with the defence in place survives, so it was the mutant that was caught. R5's defence is a
    /// refusal: the engine will not run manual mode without wait-on-ack at all.
    /// </summary>
    private static void AssertTheDefenceHolds(Mutant mutant, int seed)
    {
        if (mutant.AllowUnsafe)
        {
            var refused = Assert.Throws<ArgumentException>(() => FuzzHarness.Run(seed, mutant.Profile));
            Assert.Contains("R5", refused.Message, StringComparison.Ordinal);
            return;
        }

        var correct = FuzzHarness.Run(seed, mutant.Profile);
        Assert.False(correct.Caught, $"seed {seed} fails the correct engine too: {correct}");
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
