using Microsoft.Extensions.Logging;

namespace Migration.Shared.Precopy;

/// <summary>The engine's source-generated log messages, with fixed event ids.</summary>
internal static partial class PrecopyLog
{
    [LoggerMessage(1, LogLevel.Information, "migration {Id}: {From} -> {To}")]
    public static partial void PhaseChanged(ILogger logger, string id, MigrationPhase from, MigrationPhase to);

    [LoggerMessage(2, LogLevel.Debug,
        "migration {Id}: round {Round} sent {Sent} pages; {Remaining} remain, dirty rate {DirtyRate:F0} pages/s, " +
        "data rate {DataRate:F0} pages/s, expected downtime {ExpectedMs:F1} ms: {Decision}")]
    public static partial void RoundDecided(ILogger logger, string id, int round, long sent, long remaining,
        double dirtyRate, double dataRate, double expectedMs, string decision);

    [LoggerMessage(3, LogLevel.Warning, "migration {Id} {Outcome} ({Kind}): {Reason}")]
    public static partial void Ended(ILogger logger, string id, MigrationPhase outcome, FailureKind kind,
        string reason);

    [LoggerMessage(4, LogLevel.Information, "migration {Id}: completed and verified; downtime {DowntimeMs:F1} ms")]
    public static partial void Completed(ILogger logger, string id, double downtimeMs);

    [LoggerMessage(6, LogLevel.Warning,
        "migration {Id}: no answer to the resume-first Complete ({Reason}); sending Confirm all the same")]
    public static partial void CompleteReplyLost(ILogger logger, string id, string reason);

    [LoggerMessage(5, LogLevel.Debug, "migration {Id}: {Count} participant(s) joined")]
    public static partial void ParticipantsJoined(ILogger logger, string id, int count);

    [LoggerMessage(8, LogLevel.Error, "migration {Id}: internal error during {Where} (a bug, not the network)")]
    public static partial void InternalError(ILogger logger, string id, string where, Exception exception);

    [LoggerMessage(7, LogLevel.Debug, "migration {Id}: switchover rehearsed; its fixed cost is {Cost}")]
    public static partial void SwitchoverRehearsed(ILogger logger, string id, string cost);
}
