namespace Migration.Shared.Precopy;

/// <summary>Times consecutive phases into a report's phase table: each <see cref="Next"/> closes one phase.</summary>
internal sealed class PhaseTimer(TimeProvider time, IDictionary<string, double> phases)
{
    private long _since = time.GetTimestamp();

    /// <summary>
    /// Records the time since the previous phase ended as <paramref name="phase"/>; returns it in ms.
    /// </summary>
    public double Next(string phase)
    {
        double ms = Lap();
        phases[phase] = ms;
        return ms;
    }

    /// <summary>The time since the previous phase ended, without recording it; starts the next phase.</summary>
    public double Lap()
    {
        long now = time.GetTimestamp();
        double ms = time.GetElapsedTime(_since, now).TotalMilliseconds;
        _since = now;
        return ms;
    }
}
