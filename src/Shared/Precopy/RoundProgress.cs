namespace Migration.Shared.Precopy;

/// <summary>A progress snapshot for the live display: one per precopy round, and one as stop-and-copy starts.</summary>
public readonly record struct RoundProgress(
    MigrationPhase Phase,
    int Round,
    long RemainingPages,
    long PagesSent,
    double ThroughputMBps,
    double ExpectedDowntimeMs,
    double ThrottlePercent = 0,
    string? Prediction = null)
{
    public bool Final => Phase != MigrationPhase.Precopy;
}
