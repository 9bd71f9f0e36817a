using Migration.Shared.Devices;

namespace Migration.Shared.Balloon;

/// <summary>
/// Free page reporting as one migration saw it: what it skipped and what was discarded while it ran, with the
/// device's totals at its end (since the device was created). The device keeps this record and the report serialises
/// it as its <c>reporting</c> section.
/// </summary>
public sealed record PageReportingMigrationStats : IMigrationStats
{
    /// <summary>Whether this migration skipped discarded pages (off: scanned and sent as zero, as QEMU does).</summary>
    public bool SkipsDiscarded { get; init; }

    /// <summary>
    /// Pages skipped as discarded at setup (those still unbacked on the host, and that no store touched since):
    /// zero on both sides, never scanned nor sent.
    /// </summary>
    public long PagesSkipped { get; init; }

    /// <summary>
    /// Pages the guest reported and the host discarded while this migration ran; each was logged as written and
    /// sent as a zero page.
    /// </summary>
    public long PagesDiscardedDuringMigration { get; init; }

    public long Reports { get; init; }

    public long PagesDiscarded { get; init; }

    /// <summary>Pages reported but kept: the guest poisons free pages with a value that is not zero.</summary>
    public long PagesKeptPoisoned { get; init; }

    /// <summary>Pages the device's discard map has at the end (some may be backed again).</summary>
    public long DiscardMapPages { get; init; }
}
