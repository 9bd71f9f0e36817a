namespace Migration.Shared.Transport;

/// <summary>
/// A token bucket shared by all channels: a sender asks for its batch's bytes and is delayed until the configured rate
/// allows them. With a null rate it never waits. This is both the user's bandwidth cap and the benchmark's link
/// emulation. The rate may change while senders wait (a live parameter): a batch already granted keeps its slot.
/// </summary>
internal sealed class BandwidthLimiter(double? bytesPerSecond, TimeProvider time)
{
    private readonly object _lock = new();
    private readonly long _start = time.GetTimestamp();
    private double? _rate = bytesPerSecond;
    private double _reservedSeconds; // seconds of transfer already granted, measured from _start

    /// <summary>Bytes per second; null = uncapped.</summary>
    public double? Rate
    {
        get
        {
            lock (_lock)
            {
                return _rate;
            }
        }

        set
        {
            lock (_lock)
            {
                _rate = value;
            }
        }
    }

    public async ValueTask WaitAsync(long bytes, CancellationToken ct)
    {
        TimeSpan delay;
        lock (_lock)
        {
            if (_rate is not double rate)
            {
                return;
            }

            double now = time.GetElapsedTime(_start).TotalSeconds;
            // No credit for idle time beyond a 10 ms burst: the link does not bank unused capacity.
            _reservedSeconds = Math.Max(_reservedSeconds, now - 0.01);
            double startAt = _reservedSeconds;
            _reservedSeconds += bytes / rate;
            delay = TimeSpan.FromSeconds(Math.Max(0, startAt - now));
        }

        if (delay > TimeSpan.FromMilliseconds(1))
        {
            await Task.Delay(delay, time, ct).ConfigureAwait(false);
        }
    }
}
