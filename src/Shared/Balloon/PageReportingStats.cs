namespace Migration.Shared.Balloon;

/// <summary>Free page reporting's totals since the device was created.</summary>
/// <param name="DiscardMapPages">Pages the discard map has now (some may be backed again).</param>
public sealed record PageReportingStats(long Reports, long BlocksReported, long PagesDiscarded, long PagesKeptPoisoned,
    long DiscardMapPages);
