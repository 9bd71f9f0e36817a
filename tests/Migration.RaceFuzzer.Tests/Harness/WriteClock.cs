namespace Migration.RaceFuzzer.Tests.Harness;

/// <summary>
/// A logical clock over the events race R6 is about: guest stores, sync starts, hint applications and pages queued and
/// read for sending. Its oracle: a page that a hint cleared, not written since, and then queued again was brought back
/// by the dirty log it should have been re-armed in (R6: hinted pages come back).
/// </summary>
internal sealed class WriteClock(long pages)
{
    private readonly long[] _lastWrite = new long[pages];
    private readonly long[] _hintedCleanAt = new long[pages];
    private readonly long[] _queuedAt = new long[pages];
    private readonly List<string> _violations = [];
    private long _clock;
    private long _lastSyncStart = -1;

    public IReadOnlyList<string> Violations => _violations;

    public void Stored(long pfn) => _lastWrite[pfn] = Tick();

    public void Syncing(bool starting)
    {
        if (starting)
        {
            _lastSyncStart = Tick();
        }
    }

    /// <summary>A hint cleared these pages; those not written since the last sync started are clean now.</summary>
    public void Applied(long firstPfn, long pages)
    {
        for (long p = firstPfn; p < firstPfn + pages; p++)
        {
            _hintedCleanAt[p] = _lastWrite[p] < _lastSyncStart ? Tick() : 0;
        }
    }

    public void Queued(long pfn) => _queuedAt[pfn] = Tick();

    /// <summary>A channel reads the page to send it.</summary>
    public void Read(long pfn)
    {
        long hinted = _hintedCleanAt[pfn];
        if (hinted > 0 && _queuedAt[pfn] > hinted && _lastWrite[pfn] < hinted && _violations.Count < 20)
        {
            _violations.Add($"R6: page {pfn} was sent again after its hint although the guest did not write it since");
        }

        _hintedCleanAt[pfn] = 0;
    }

    private long Tick() => Interlocked.Increment(ref _clock);
}
