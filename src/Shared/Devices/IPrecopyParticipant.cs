using Migration.Shared.DirtyTracking;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;

namespace Migration.Shared.Devices;

/// <summary>What a migration asks of its participants (QEMU calls these migration capabilities).</summary>
public sealed record MigrationCapabilities
{
    /// <summary>Free page hinting: the balloon device may clear hinted free pages from the bitmap.</summary>
    public bool FreePageHinting { get; init; }

    /// <summary>
    /// The balloon device may clear the pages it holds (discarded: they read as zero) from the bitmap, so they are
    /// neither scanned nor sent. Off sends them as zero pages, as QEMU does (the comparison `bench` makes).
    /// </summary>
    public bool SkipBallooned { get; init; } = true;

    /// <summary>
    /// The balloon device may clear the pages free page reporting discarded, and that no store has touched since, from
    /// the first round's bitmap. Off scans and sends them (as zero pages), as QEMU does.
    /// </summary>
    public bool SkipDiscarded { get; init; } = true;
}

/// <summary>
/// What a participant gets at setup: the migration's bitmap (and through it the dirty log) and capabilities.
/// </summary>
public sealed record PrecopySetup(MigrationBitmap Bitmap, MigrationCapabilities Capabilities);

/// <summary>
/// A device that takes part in precopy, told about each step in the spirit of QEMU's precopy notifiers
/// (<c>PRECOPY_NOTIFY_SETUP</c>, <c>BEFORE_BITMAP_SYNC</c>, <c>AFTER_BITMAP_SYNC</c>, <c>COMPLETE</c>,
/// <c>CLEANUP</c>). The engine calls every participant at these points and names none of them.
/// </summary>
/// <remarks>
/// Order within one migration: <see cref="Setup"/> once, after dirty logging is on and every page is marked to send;
/// then around every sync, the setup sync and the final one included, <see cref="BeforeSync"/> and
/// <see cref="AfterSync"/>; <see cref="Complete"/> once the last pages are out and before device state is saved;
/// <see cref="Cleanup"/> exactly once at the end, whatever the outcome; <see cref="Report"/> after that.
/// </remarks>
public interface IPrecopyParticipant
{
    /// <summary>
    /// Joins the migration; returns false to sit it out (then no other call follows but Cleanup and Report).
    /// </summary>
    bool Setup(PrecopySetup setup);

    void BeforeSync(bool vmRunning);

    void AfterSync(bool vmRunning);

    void Complete();

    void Cleanup(MigrationStatus outcome);

    /// <summary>Adds what the participant did to the report.</summary>
    void Report(MigrationReport report);
}
