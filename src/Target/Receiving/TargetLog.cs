namespace Migration.Target.Receiving;

/// <summary>Source-generated log messages with fixed event ids.</summary>
internal static partial class TargetLog
{
    [LoggerMessage(1, LogLevel.Information, "migration {Id}: receiving a {Mib} MiB guest with {Vcpus} vCPUs")]
    public static partial void Receiving(ILogger logger, string id, long mib, int vcpus);

    [LoggerMessage(2, LogLevel.Warning, "migration {Id} failed: {Reason}; partial guest discarded")]
    public static partial void Failed(ILogger logger, string id, string reason);

    [LoggerMessage(3, LogLevel.Information,
        "migration {Id}: compared {Pages} pages in {Ms} ms, {Mismatched} mismatched, self-check {Check}")]
    public static partial void Verified(ILogger logger, string id, ulong pages, long ms, long mismatched, string check);

    [LoggerMessage(4, LogLevel.Information,
        "migration {Id}: guest ran {Seconds} s after resume; self-check {Check} {Crashes}")]
    public static partial void RanAfter(ILogger logger, string id, double seconds, string check, string crashes);

    [LoggerMessage(5, LogLevel.Warning, "migration {Id}: page stream broke: {Message}")]
    public static partial void StreamBroke(ILogger logger, string id, string message);

    [LoggerMessage(6, LogLevel.Information, "preallocated {Mib} MiB of guest RAM in {Ms} ms")]
    public static partial void Preallocated(ILogger logger, long mib, long ms);

    [LoggerMessage(7, LogLevel.Information, "migration {Id}: {From} -> {To}")]
    public static partial void StateChanged(ILogger logger, string id, string from, string to);

    [LoggerMessage(8, LogLevel.Warning, "report {Path} not written: {Reason}")]
    public static partial void ReportNotWritten(ILogger logger, string path, string reason);

    [LoggerMessage(9, LogLevel.Error, "migration {Id}: switchover failed unexpectedly; guest discarded")]
    public static partial void SwitchoverCrashed(ILogger logger, string id, Exception exception);

    [LoggerMessage(10, LogLevel.Error, "{Method} failed unexpectedly")]
    public static partial void HandlerFailed(ILogger logger, string method, Exception exception);
}
