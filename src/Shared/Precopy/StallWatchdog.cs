using Migration.Shared.Transport;

namespace Migration.Shared.Precopy;

/// <summary>
/// Notices a connection on which nothing moves. While armed (pages are being sent, streams are closing), it trips when
/// the bytes on the wire have not changed for the stall timeout, and cancels <see cref="Token"/>; the attempt then
/// fails with where it stalled, and the guest runs on. A stalled peer otherwise holds a migration until the HTTP/2
/// keep-alive gives up, or forever when pings still pass.
/// </summary>
internal sealed class StallWatchdog : IDisposable
{
    private readonly TransferCounters _counters;
    private readonly TimeProvider _time;
    private readonly TimeSpan _timeout;
    private readonly CancellationTokenSource _tripped = new();
    private readonly object _gate = new();
    private readonly CancellationTokenSource _stop = new();
    private string? _armedFor;
    private long _lastBytes;
    private long _lastMove;

    public StallWatchdog(TransferCounters counters, TimeProvider time, TimeSpan timeout)
    {
        _counters = counters;
        _time = time;
        _timeout = timeout;
    }

    /// <summary>Cancelled once the watchdog trips.</summary>
    public CancellationToken Token => _tripped.Token;

    /// <summary>Why it tripped: "nothing moved for 30 s while sending round 3".</summary>
    public string? Reason { get; private set; }

    /// <summary>Starts checking in the background, every quarter of the timeout (at most once a second).</summary>
    public void Start()
    {
        var period = TimeSpan.FromSeconds(Math.Clamp(_timeout.TotalSeconds / 4, 0.01, 1));
        _ = Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                await Task.Delay(period, _stop.Token).ConfigureAwait(false);
                Check();
            }
        }, _stop.Token).ContinueWith(_ => { }, TaskScheduler.Default);
    }

    /// <summary>Watches progress from now on; <paramref name="what"/> names the work for the message.</summary>
    public void Arm(string what)
    {
        lock (_gate)
        {
            _armedFor = what;
            _lastBytes = _counters.BytesOnWire;
            _lastMove = _time.GetTimestamp();
        }
    }

    public void Disarm()
    {
        lock (_gate)
        {
            _armedFor = null;
        }
    }

    /// <summary>One check: trips when armed and nothing has moved for the timeout.</summary>
    public void Check()
    {
        lock (_gate)
        {
            if (_armedFor is null || Reason is not null)
            {
                return;
            }

            long bytes = _counters.BytesOnWire;
            if (bytes != _lastBytes)
            {
                _lastBytes = bytes;
                _lastMove = _time.GetTimestamp();
                return;
            }

            if (_time.GetElapsedTime(_lastMove) < _timeout)
            {
                return;
            }

            Reason = $"the connection stalled: nothing moved for {_timeout.TotalSeconds:F0} s while {_armedFor}";
        }

        _tripped.Cancel();
    }

    public void Dispose()
    {
        _stop.Cancel();
        _stop.Dispose();
        _tripped.Dispose();
    }
}
