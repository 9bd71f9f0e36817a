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

    public long BytesOnWire => Interlocked.Read(ref _bytesOnWire);

    public long PagesZero => Interlocked.Read(ref _pagesZero);

    public long PagesRaw => Interlocked.Read(ref _pagesRaw);

    public long PagesLz4 => Interlocked.Read(ref _pagesLz4);

    public long PagesSent => PagesZero + PagesRaw + PagesLz4;

    public void Add(long bytes, long zero, long raw, long lz4)
    {
        Interlocked.Add(ref _bytesOnWire, bytes);
        Interlocked.Add(ref _pagesZero, zero);
        Interlocked.Add(ref _pagesRaw, raw);
        Interlocked.Add(ref _pagesLz4, lz4);
        metrics?.Sent(bytes, zero, raw, lz4);
    }
}
