using System.Text.Json.Serialization;
using Migration.Shared.Devices;

namespace Migration.Shared.Balloon;

/// <summary>
/// What the hint device did during one migration. The device keeps this record and the report serialises it as its
/// <c>hints</c> section, so the JSON names here are the report's.
/// </summary>
public sealed record HintStats : IMigrationStats
{
    /// <summary>Whether the guest negotiated waiting for the host's ack before reusing hinted pages.</summary>
    public bool WaitOnAck { get; init; }

    [JsonPropertyName("cmdIds")]
    public long CommandIdsIssued { get; init; }

    public long BlocksReceived { get; init; }

    public long BlocksApplied { get; init; }

    public long BlocksDroppedStale { get; init; }

    /// <summary>Migration-bitmap bits the hints cleared: page sends they saved.</summary>
    public long PagesCleared { get; init; }

    public long DeviceErrors { get; init; }

    /// <summary>The first device error, which stopped hinting for the migration.</summary>
    public string? DeviceError { get; init; }
}
