namespace Migration.Shared.Balloon;

/// <summary>What the hint device did during one migration: a snapshot (the report's <c>hints</c> section).</summary>
public sealed record HintStats
{
    public long CommandIdsIssued { get; init; }

    public long BlocksReceived { get; init; }

    public long BlocksApplied { get; init; }

    public long BlocksDroppedStale { get; init; }

    public long PagesCleared { get; init; }

    public long DeviceErrors { get; init; }

    /// <summary>The first device error, which stopped hinting for the migration.</summary>
    public string? Error { get; init; }
}
