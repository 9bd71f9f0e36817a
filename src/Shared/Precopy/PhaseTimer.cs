namespace Migration.Shared.Precopy;

/// <summary>
/// Times consecutive phases into a report's phase table: each <see cref="Next"/> closes one phase where the previous
/// one ended, so the phases add up to the time from <see cref="Started"/> to <see cref="Since"/>.
/// </summary>
internal sealed class PhaseTimer
{
    private readonly TimeProvider _time;
    private readonly IDictionary<string, double> _phases;

    public PhaseTimer(TimeProvider time, IDictionary<string, double> phases)
    {
        _time = time;
        _phases = phases;
        Started = Since = time.GetTimestamp();
    }

    /// <summary>When the timer started: the first phase's start.</summary>
    public long Started { get; }

    /// <summary>When the last phase ended (or the timer started).</summary>
    public long Since { get; private set; }

    /// <summary>The time from <see cref="Started"/> to the end of the last phase, in ms.</summary>
    public double ElapsedMs => _time.GetElapsedTime(Started, Since).TotalMilliseconds;

    /// <summary>
    /// Records the time since the previous phase ended as <paramref name="phase"/> (added to it if the phase already
    /// has time); returns it in ms.
    /// </summary>
    public double Next(string phase)
    {
        double ms = Lap();
        _phases[phase] = _phases.TryGetValue(phase, out double before) ? before + ms : ms;
        return ms;
    }

    /// <summary>The time since the previous phase ended, without recording it; starts the next phase.</summary>
    public double Lap()
    {
        long now = _time.GetTimestamp();
        double ms = _time.GetElapsedTime(Since, now).TotalMilliseconds;
        Since = now;
        return ms;
    }
}
