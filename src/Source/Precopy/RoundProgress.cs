namespace Migration.Source.Precopy;

/// <summary>A progress snapshot for the live display.</summary>
public readonly record struct RoundProgress(int Round, bool Final, long RemainingPages, long PagesSent, double ThroughputMBps, double ExpectedDowntimeMs, string Phase);
