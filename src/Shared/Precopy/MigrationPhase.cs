namespace Migration.Shared.Precopy;

/// <summary>
/// Where a source migration is (QEMU's <c>MigrationStatus</c> in our terms). Setup -> Precopy -> StopAndCopy ->
/// Handover -> Completed, or Failed / Cancelled from any phase before Completed.
/// </summary>
public enum MigrationPhase
{
    /// <summary>Begin, channels, dirty logging on, participants join, the setup sync.</summary>
    Setup,

    /// <summary>Rounds: send what is dirty while the guest runs, sync, decide.</summary>
    Precopy,

    /// <summary>The guest is paused: final sync, last pages, digests and device state.</summary>
    StopAndCopy,

    /// <summary>The target verifies and resumes; the source waits for its answer.</summary>
    Handover,

    /// <summary>The target runs the guest; this copy never runs again.</summary>
    Completed,

    /// <summary>Ended on an error; the source guest runs on.</summary>
    Failed,

    /// <summary>Ended on the user's request; the source guest runs on.</summary>
    Cancelled,

    /// <summary>The handover's outcome could not be learned; the source guest stays paused.</summary>
    Unknown,
}
