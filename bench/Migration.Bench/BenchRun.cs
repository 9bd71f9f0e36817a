using System.Text.Json;
using System.Text.Json.Serialization;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;

namespace Migration.Bench;

/// <summary>One migration of the benchmark: what ran, both processes' reports, and how it ended.</summary>
internal sealed class BenchRun
{
    public required string Scenario { get; init; }

    public required string Link { get; init; }

    public required bool Hints { get; init; }

    public required int Repeat { get; init; }

    /// <summary>The source's full migration report (null when the source died before writing one).</summary>
    public MigrationReport? Source { get; set; }

    /// <summary>The target's report as it wrote it.</summary>
    public JsonElement? Target { get; set; }

    public ProcessStats? TargetProcess { get; set; }

    public int SourceExitCode { get; set; }

    public int? TargetExitCode { get; set; }

    /// <summary>Wall time of the whole run, guest boot and warm-up included.</summary>
    public double WallSeconds { get; set; }

    /// <summary>Why the run does not count, or null.</summary>
    public string? Error { get; set; }

    public string? SourceLog { get; set; }

    public string? TargetLog { get; set; }

    [JsonIgnore]
    public bool Ok => Error is null && Source is { Status: MigrationStatus.Completed, Verified: true };

    [JsonIgnore]
    public string Label => $"{Scenario} {Link} hints {(Hints ? "on" : "off")} #{Repeat}";
}
