using System.Diagnostics;
using System.Globalization;
using Migration.RaceFuzzer.Tests.Harness;
using Xunit.Abstractions;

namespace Migration.RaceFuzzer.Tests;

/// <summary>
/// The fuzzer's contract: the correct engine survives many seeds in every allowed configuration, and each race of the
/// catalogue, switched on as a mutant, is caught within a bounded number of seeds (MutantTests). Seeds replay with
/// FUZZ_SEEDS.
/// </summary>
public sealed class RaceFuzzerTests(ITestOutputHelper output)
{
    /// <summary>Seeds each mutant gets before the test calls the fuzzer too weak.</summary>
    internal const int MutantSeedBound = 1500;

    internal static IEnumerable<int> Seeds(int count)
    {
        string? fixedSeeds = Environment.GetEnvironmentVariable("FUZZ_SEEDS");
        if (string.IsNullOrEmpty(fixedSeeds))
        {
            return Enumerable.Range(1, count);
        }

        var parts = fixedSeeds.Split('-');
        int first = int.Parse(parts[0], CultureInfo.InvariantCulture);
        int last = parts.Length > 1 ? int.Parse(parts[1], CultureInfo.InvariantCulture) : first;
        return Enumerable.Range(first, last - first + 1);
    }

    /// <summary>
    /// One seed is a latency-bound run (one actor at a time, a thread hand-off per step), so the profiles run as
    /// separate classes, which xUnit runs in parallel: on a loaded machine four streams overlap their waits.
    /// </summary>
    /// <summary>
    /// Seeds each correct-engine profile runs in the suite: seven profiles share its six minutes with the mutants,
    /// which also run the correct engine on every catching seed. FUZZ_SEEDS=1-2000 runs a longer hunt.
    /// </summary>
    internal const int ProfileSeeds = 60;

    internal static void Survives(FuzzProfile profile, ITestOutputHelper output)
    {
        var sw = Stopwatch.StartNew();
        int runs = 0;
        long unfinished = 0;
        int withDeltas = 0;
        foreach (int seed in Seeds(ProfileSeeds))
        {
            var outcome = FuzzHarness.Run(seed, profile);
            runs++;
            Assert.False(outcome.Caught, $"correct engine failed: {outcome}");
            unfinished += outcome.Finished ? 0 : 1;
            withDeltas += outcome.Report?.Transfer.Delta is { Hits: > 0, Misses: > 0 } ? 1 : 0;
        }

        output.WriteLine($"{profile}: {runs} seeds survived in {sw.Elapsed.TotalSeconds:F1} s " +
            $"({runs / sw.Elapsed.TotalSeconds:F1} seeds/s), {unfinished} hit the step limit" +
            (profile == FuzzProfile.Deltas ? $", {withDeltas} sent deltas and misses" : string.Empty));
        Assert.True(unfinished <= runs / 10,
            $"{unfinished} of {runs} seeds did not finish: the harness is not exercising migrations");
        Assert.True(profile != FuzzProfile.Deltas || withDeltas >= runs / 2,
            $"only {withDeltas} of {runs} seeds sent deltas: the Deltas profile is not exercising them");
    }

    [Fact]
    public void CorrectEngine_SurvivesManySeeds_EagerNoAck() => Survives(FuzzProfile.EagerNoAck, output);

    public sealed class EagerWaitOnAck(ITestOutputHelper output)
    {
        [Fact]
        public void CorrectEngine_SurvivesManySeeds() => Survives(FuzzProfile.EagerWaitOnAck, output);
    }

    public sealed class ManualWaitOnAck(ITestOutputHelper output)
    {
        [Fact]
        public void CorrectEngine_SurvivesManySeeds() => Survives(FuzzProfile.ManualWaitOnAck, output);
    }

    public sealed class Balloon(ITestOutputHelper output)
    {
        [Fact]
        public void CorrectEngine_SurvivesManySeeds() => Survives(FuzzProfile.Balloon, output);
    }

    public sealed class Reporting(ITestOutputHelper output)
    {
        [Fact]
        public void CorrectEngine_SurvivesManySeeds() => Survives(FuzzProfile.Reporting, output);
    }

    public sealed class Throttled(ITestOutputHelper output)
    {
        [Fact]
        public void CorrectEngine_SurvivesManySeeds() => Survives(FuzzProfile.Throttled, output);
    }

    public sealed class Deltas(ITestOutputHelper output)
    {
        [Fact]
        public void CorrectEngine_SurvivesManySeeds() => Survives(FuzzProfile.Deltas, output);
    }
}
