using System.Text.Json;
using System.Text.Json.Serialization;
using Migration.Protocol;
using Migration.Shared.Reporting;

namespace Migration.Target.Receiving;

/// <summary>How a migration ended on the target.</summary>
internal enum TargetOutcome
{
    [JsonStringEnumMemberName("resumed")]
    Resumed,

    [JsonStringEnumMemberName("failed")]
    Failed,

    /// <summary>Resumed, but the guest's self-check after <c>--run-after</c> failed.</summary>
    [JsonStringEnumMemberName("failed-after-resume")]
    FailedAfterResume,
}

/// <summary>The target's <c>--report</c> file (camelCase JSON, beside the source's report).</summary>
internal sealed record TargetReport
{
    public required string MigrationId { get; init; }

    public required TargetOutcome Status { get; init; }

    public bool Verified { get; init; }

    public string? Error { get; init; }

    public VerificationSection? Verification { get; init; }

    public string? RunAfterSelfCheck { get; init; }

    public ProcessStats? Process { get; init; }

    public static TargetReport Of(string migrationId, TargetOutcome status, CompleteReply? reply, string? error,
        ProcessMark cpuAtStart, string? runAfterCheck = null) => new()
        {
            MigrationId = migrationId,
            Status = status,
            Verified = reply?.Verified ?? false,
            Error = string.IsNullOrEmpty(error) ? null : error,
            Verification = reply is null
                ? null
                : new VerificationSection(reply.PagesCompared, reply.MismatchedPages, reply.GuestSelfCheck),
            RunAfterSelfCheck = runAfterCheck,
            Process = ProcessStats.Capture(cpuAtStart),
        };

    public string ToJson() => JsonSerializer.Serialize(this, MigrationReport.JsonOptions);

    public sealed record VerificationSection(ulong PagesCompared, ulong MismatchedPages, string GuestSelfCheck);
}

/// <summary>
/// Writes target reports off the reply path (serialising a report in a fresh process cost tens of milliseconds, and the
/// switchover's reply must not wait for it), in order, on the thread pool. An unwritable report is logged, never fatal.
/// </summary>
internal sealed class TargetReportWriter(TargetOptions options, ILogger<TargetReportWriter> log)
{
    private readonly object _gate = new();
    private Task _writes = Task.CompletedTask;

    public void Queue(Func<TargetReport> report)
    {
        if (options.ReportPath is not string path)
        {
            return;
        }

        lock (_gate)
        {
            _writes = _writes.ContinueWith(_ => Write(path, report()), CancellationToken.None,
                TaskContinuationOptions.None, TaskScheduler.Default);
        }
    }

    /// <summary>Waits (boundedly) for the reports queued so far.</summary>
    public void Flush(TimeSpan timeout)
    {
        Task pending;
        lock (_gate)
        {
            pending = _writes;
        }

        if (!pending.Wait(timeout))
        {
            TargetLog.ReportNotWritten(log, options.ReportPath ?? "?",
                $"still writing after {timeout.TotalSeconds:F0} s");
        }
    }

    private void Write(string path, TargetReport report)
    {
        try
        {
            File.WriteAllText(path, report.ToJson());
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            TargetLog.ReportNotWritten(log, path, ex.Message);
        }
    }
}
