namespace Migration.Shared.Protocol;

/// <summary>
/// How a migration ended, as the report states it (<c>completed</c>, <c>failed</c>, <c>cancelled</c>).
/// </summary>
public enum MigrationStatus
{
    /// <summary>The target verified and resumed the guest; the source's copy never runs again.</summary>
    Completed,

    /// <summary>The migration stopped on an error; the source guest keeps running.</summary>
    Failed,

    /// <summary>The user cancelled it; the source guest keeps running.</summary>
    Cancelled,

    /// <summary>
    /// The handover's outcome could not be learned (the Complete answer was lost and the target did not say in time
    /// what it decided). The source guest stays paused: it may be running on the target. The error says what to do.
    /// </summary>
    Unknown,
}
