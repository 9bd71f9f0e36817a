using Migration.Shared.Devices;

namespace Migration.Shared.Balloon;

/// <summary>
/// The balloon's inflate and deflate side in one migration: what it kept off the wire and did while the migration ran,
/// and where the device stood at its end. The device keeps this record and the report serialises it as its
/// <c>balloon</c> section (hints and free page reporting have their own).
/// </summary>
/// <remarks>
/// Not <see cref="BalloonDeviceStats"/>, which counts since the device was created (<c>query-balloon</c>): here the
/// counters are this migration's.
/// </remarks>
public sealed record BalloonMigrationStats : IMigrationStats
{
    /// <summary>Whether this migration skipped the balloon's pages (off: sent as zero pages, as QEMU does).</summary>
    public bool SkipsBallooned { get; init; }

    /// <summary>The negotiated encoding of inflate and deflate buffers (<see cref="BalloonEncoding"/>).</summary>
    public string Encoding { get; init; } = "";

    /// <summary>The negotiated feature bits, in hex.</summary>
    public string Features { get; init; } = "";

    public long TargetPages { get; init; }

    public long ActualPages { get; init; }

    /// <summary>Pages the device held at the end: discarded on both sides, sent as ranges in the device state.</summary>
    public long HeldPages { get; init; }

    /// <summary>Migration-bitmap bits cleared because the balloon held the page: discarded, never sent.</summary>
    public long PagesSkipped { get; init; }

    public long InflatedDuringMigration { get; init; }

    public long DeflatedDuringMigration { get; init; }

    public long GuestEvents { get; init; }

    /// <summary>Device errors since the device was created.</summary>
    public long DeviceErrors { get; init; }

    /// <summary>The last of them.</summary>
    public string? DeviceError { get; init; }
}
