using Migration.Shared.Diagnostics;

namespace Migration.Shared.Transport;

/// <summary>
/// What the channels have put on the wire, summed over all of them (and passed on to the live instruments).
/// </summary>
internal sealed class TransferCounters(SourceMetrics? metrics = null)
{
    private long _bytesOnWire;
    private long _pagesZero;
    private long _pagesRaw;
    private long _pagesLz4;
    private long _pagesDelta;
    private long _deltaMisses;
    private long _deltaOverflows;
    private long _deltaBytesSaved;

    public long BytesOnWire => Interlocked.Read(ref _bytesOnWire);

    public long PagesZero => Interlocked.Read(ref _pagesZero);

    public long PagesRaw => Interlocked.Read(ref _pagesRaw);

    public long PagesLz4 => Interlocked.Read(ref _pagesLz4);

    /// <summary>Pages sent as a delta against the copy the target holds (delta cache hits).</summary>
    public long PagesDelta => Interlocked.Read(ref _pagesDelta);

    /// <summary>Pages sent whole after round 0 because the delta cache held no usable copy.</summary>
    public long DeltaMisses => Interlocked.Read(ref _deltaMisses);

    /// <summary>Pages the delta cache held whose delta was too large to be worth it: sent whole.</summary>
    public long DeltaOverflows => Interlocked.Read(ref _deltaOverflows);

    /// <summary>Payload bytes the deltas saved against raw pages.</summary>
    public long DeltaBytesSaved => Interlocked.Read(ref _deltaBytesSaved);

    /// <summary>The delta cache, once the target took delta pages (set at Begin); null without deltas.</summary>
    public DeltaPageCache? DeltaCache { get; set; }

    public long PagesSent => PagesZero + PagesRaw + PagesLz4 + PagesDelta;

    /// <summary>
    /// Pages that carried data (raw, LZ4, delta): what the convergence rate counts. A delta counts at what it cost on
    /// the wire, as an LZ4 page does: the pages still dirty at the end go the same way.
    /// </summary>
    public long PagesWithData => PagesRaw + PagesLz4 + PagesDelta;

    public void Add(long bytes, long zero, long raw, long lz4) =>
        Add(bytes, new PageTally { Zero = zero, Raw = raw, Lz4 = lz4 });

    public void Add(long bytes, in PageTally tally)
    {
        Interlocked.Add(ref _bytesOnWire, bytes);
        Interlocked.Add(ref _pagesZero, tally.Zero);
        Interlocked.Add(ref _pagesRaw, tally.Raw);
        Interlocked.Add(ref _pagesLz4, tally.Lz4);
        if (tally.Delta != 0 || tally.DeltaMisses != 0 || tally.DeltaOverflows != 0)
        {
            Interlocked.Add(ref _pagesDelta, tally.Delta);
            Interlocked.Add(ref _deltaMisses, tally.DeltaMisses);
            Interlocked.Add(ref _deltaOverflows, tally.DeltaOverflows);
            Interlocked.Add(ref _deltaBytesSaved, tally.DeltaBytesSaved);
        }

        metrics?.Sent(bytes, tally.Zero, tally.Raw, tally.Lz4, tally.Delta);
    }
}
