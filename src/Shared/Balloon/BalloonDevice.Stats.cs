namespace Migration.Shared.Balloon;

/// <summary>
/// The statistics queue (QEMU's <c>guest-stats</c>): the guest's memory counters, the one buffer the device keeps as
/// its next request, and polling. Not the device's own figures, which are <see cref="Stats"/>.
/// </summary>
public sealed partial class BalloonDevice
{
    private readonly TimeProvider _time;
    private long _statsHeld = -1; // the guest's stats buffer the device keeps as its next request (-1: none)
    private GuestStats _guestStats = new();
    private ITimer? _statsTimer;

    /// <summary>The latest statistics the guest reported (QEMU's <c>guest-stats</c>).</summary>
    public GuestStats GuestStats
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _guestStats;
            }
        }
    }

    /// <summary>Whether the device holds the guest's stats buffer (a request can be made now).</summary>
    public bool HoldsStatsBuffer
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _statsHeld >= 0;
            }
        }
    }

    /// <summary>
    /// Asks the guest for fresh statistics: gives back the buffer the device holds, which the driver refills and
    /// queues again. False when the device holds none (no stats queue, or the guest has not answered the last one).
    /// </summary>
    public bool RequestStats()
    {
        using (_scheduling.Lock(_gate))
        {
            if (_statsHeld < 0)
            {
                return false;
            }

            _statsHeld = -1;
            Monitor.PulseAll(_gate);
            GuestNotify?.Invoke();
            return true;
        }
    }

    /// <summary>
    /// Stops polling for good (the VM shuts down). Takes no lock: a shutdown must not wait for a guest thread that
    /// was stopped while it used the device.
    /// </summary>
    public void StopStatsPolling() => Interlocked.Exchange(ref _statsTimer, null)?.Dispose();

    /// <summary>
    /// Requests statistics every <paramref name="seconds"/> (QEMU's guest-stats-polling-interval); 0 stops.
    /// </summary>
    public void SetStatsPolling(int seconds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(seconds);
        using (_scheduling.Lock(_gate))
        {
            StopStatsPolling();
            if (seconds > 0)
            {
                var period = TimeSpan.FromSeconds(seconds);
                _statsTimer = _time.CreateTimer(_ => RequestStats(), null, period, period);
            }

            _guestStats = _guestStats with { PollingIntervalSeconds = seconds };
        }
    }

    /// <summary>
    /// A stats buffer: its values become the latest statistics, and the device keeps the buffer as the next request
    /// token (it is not used until <see cref="RequestStats"/>). A malformed one is a device error and is given back.
    /// A second buffer while one is held breaks the one-outstanding rule: the old one is given back (as QEMU does).
    /// </summary>
    private void ReceiveStats(long seq, byte[] buffer)
    {
        var values = BalloonStats.Decode(buffer, out string? problem);
        if (values is null)
        {
            FailLocked(problem!);
            return;
        }

        if (_statsHeld >= 0)
        {
            FailLocked("stats: a second buffer while the device holds one (at most one may be outstanding)");
        }

        _statsHeld = seq;
        _guestStats = _guestStats with
        {
            LastUpdate = _time.GetUtcNow().ToUnixTimeSeconds(),
            Values = values,
            Reports = _guestStats.Reports + 1,
        };
    }
}
