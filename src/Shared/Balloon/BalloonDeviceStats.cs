namespace Migration.Shared.Balloon;

/// <summary>The device's totals (what <c>query-balloon</c> and the reports show).</summary>
public sealed record BalloonDeviceStats
{
    public long TargetPages { get; init; }

    public long ActualPages { get; init; }

    public long HeldPages { get; init; }

    public long InflateRequests { get; init; }

    public long DeflateRequests { get; init; }

    public long PagesInflated { get; init; }

    public long PagesDeflated { get; init; }

    public long GuestEvents { get; init; }

    public long DeviceErrors { get; init; }

    public string? LastError { get; init; }
}
