namespace Migration.Shared.Precopy;

/// <summary>
/// The rates precopy decides by, measured round by round: link bytes per second, pages that carry data per second,
/// and the guest's dirty rate between syncs.
/// </summary>
/// <remarks>
/// Rates come from rounds of at least <see cref="MinPagesForRate"/> pages (a tiny round's timing is mostly fixed
/// overhead), or from any round while no rate is known yet. The data-page rate counts raw and LZ4 pages only: the pages
/// still dirty at the end are written ones, so zero pages (an index each) must not speed the estimate up.
/// </remarks>
internal sealed class RoundStats
{
    public const int MinPagesForRate = 64;

    private long _lastLogged;
    private long _lastSync;

    public RoundStats(long pagesLogged, long syncTimestamp)
    {
        _lastLogged = pagesLogged;
        _lastSync = syncTimestamp;
    }

    /// <summary>Wire bytes per second of the last round that set it.</summary>
    public double BytesPerSecond { get; private set; }

    /// <summary>Raw and LZ4 pages per second of the last round that set it: what the downtime estimate uses.</summary>
    public double DataPagesPerSecond { get; private set; }

    /// <summary>Pages newly logged per second between the last two syncs.</summary>
    public double DirtyPagesPerSecond { get; private set; }

    /// <summary>
    /// Takes the rates of a round that sent <paramref name="pagesSent"/> pages in <paramref name="seconds"/>.
    /// </summary>
    public void RecordRound(long pagesSent, long bytes, long dataPages, double seconds)
    {
        if (pagesSent < MinPagesForRate && BytesPerSecond != 0)
        {
            return;
        }

        seconds = Math.Max(seconds, 1e-6);
        BytesPerSecond = bytes / seconds;
        if (dataPages > 0 || DataPagesPerSecond == 0)
        {
            DataPagesPerSecond = Math.Max(dataPages, 1) / seconds;
        }
    }

    /// <summary>
    /// Takes the dirty rate since the previous sync from the log's running count of newly logged pages.
    /// </summary>
    public void RecordSync(long pagesLogged, long timestamp, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(time);
        double seconds = Math.Max(time.GetElapsedTime(_lastSync, timestamp).TotalSeconds, 1e-6);
        DirtyPagesPerSecond = (pagesLogged - _lastLogged) / seconds;
        _lastLogged = pagesLogged;
        _lastSync = timestamp;
    }
}
