using Migration.RaceFuzzer.Tests.Mutants;
using Migration.Shared.Reporting;

namespace Migration.RaceFuzzer.Tests.Harness;

/// <summary>What one seed did. Printed, it carries the command that replays it.</summary>
public sealed record FuzzOutcome(int Seed, FuzzProfile Profile, Mutant? Mutant, bool Finished, long Steps,
    IReadOnlyList<string> Violations, MigrationReport? Report)
{
    public bool Caught => Violations.Count > 0;

    public override string ToString() =>
        $"seed {Seed} ({Profile}, {(Mutant is null ? "correct engine" : "mutant " + Mutant)}): " +
        $"{(Finished ? "finished" : "did not finish")} in {Steps} steps; " +
        (Caught ? string.Join(" | ", Violations) : "no violation") +
        $"  [replay: FUZZ_SEEDS={Seed}{(Mutant is null ? string.Empty : " FUZZ_MUTANT=" + Mutant.Race)} " +
        "dotnet test tests/Migration.RaceFuzzer.Tests -c Release]";
}
