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
    private double _previousDataRate;
    private long _lastSync;

    public RoundStats(long pagesLogged, long syncTimestamp)
    {
        _lastLogged = pagesLogged;
        _lastSync = syncTimestamp;
    }

    /// <summary>Wire bytes per second of the last round that set it.</summary>
    public double BytesPerSecond { get; private set; }

    /// <summary>Raw and LZ4 pages per second of the last round that set it.</summary>
    public double DataPagesPerSecond { get; private set; }

    /// <summary>
    /// The slower of the last two rounds' data-page rates: what the downtime estimate uses, so that one quick round
    /// (the machine idle for a moment) cannot promise a final send the link will not keep.
    /// </summary>
    public double CautiousDataPagesPerSecond => _previousDataRate > 0
        ? Math.Min(DataPagesPerSecond, _previousDataRate)
        : DataPagesPerSecond;

    /// <summary>Pages newly logged per second between the last two syncs.</summary>
    public double DirtyPagesPerSecond { get; private set; }

    /// <summary>
    /// Takes the rates of a round that sent <paramref name="pagesSent"/> pages in <paramref name="seconds"/>.
    /// </summary>
    /// <param name="inFlightPages">
    /// Pages written but not yet taken by the target when the round ended (from the target's count, 0 when unknown).
    /// A round ends when its last page is written into the stream, whose flow-control windows hold tens of MiB, so the
    /// written rate overstates what the link delivers; the stop-and-copy round ends only once the target has taken
    /// every page. Only the pages the target took in the round's time count toward the rate.
    /// </param>
    public void RecordRound(long pagesSent, long bytes, long dataPages, double seconds, long inFlightPages = 0)
    {
        if (pagesSent < MinPagesForRate && BytesPerSecond != 0)
        {
            return;
        }

        seconds = Math.Max(seconds, 1e-6);
        double delivered = pagesSent == 0
            ? 1
            : Math.Max(pagesSent - Math.Clamp(inFlightPages, 0, pagesSent), pagesSent / 10.0) / pagesSent;
        BytesPerSecond = bytes * delivered / seconds;
        if (dataPages > 0 || DataPagesPerSecond == 0)
        {
            _previousDataRate = DataPagesPerSecond;
            DataPagesPerSecond = Math.Max(dataPages * delivered, 1) / seconds;
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
