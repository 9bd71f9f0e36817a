namespace Migration.Source.Cli;

/// <summary>
/// A warm guest's pace running alone: its operations per second over short intervals, and their median, so one
/// interval disturbed by the machine (a descheduled vCPU, a collection) does not set the baseline. (Sampling began
/// before the guest was warm in a first version, and counted the steps that fault in its working set as fast as they
/// can: two runs of the same guest measured 7,600 and 15,100 ops/s.)
/// </summary>
internal sealed class PaceSampler
{
    private readonly List<double> _rates = [];
    private readonly TimeSpan _start;
    private long _ops;
    private TimeSpan _at;

    /// <summary>Starts with <paramref name="ops"/> done at <paramref name="at"/> (any clock, as long as it is one).</summary>
    public PaceSampler(long ops, TimeSpan at) => (_ops, _at, _start) = (ops, at, at);

    /// <summary>The time the samples span.</summary>
    public TimeSpan Elapsed => _at - _start;

    /// <summary>The median of the intervals' rates; null before any work was counted.</summary>
    public double? MedianPerSecond
    {
        get
        {
            if (_rates.Count == 0 || _rates.TrueForAll(r => r == 0))
            {
                return null;
            }

            var sorted = _rates.Order().ToList();
            return sorted.Count % 2 == 1
                ? sorted[sorted.Count / 2]
                : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
        }
    }

    /// <summary>The operations done by <paramref name="now"/>; the interval since the last count is one sample.</summary>
    public void Sample(long ops, TimeSpan now)
    {
        double seconds = (now - _at).TotalSeconds;
        if (seconds > 0)
        {
            _rates.Add((ops - _ops) / seconds);
        }

        (_ops, _at) = (ops, now);
    }
}
