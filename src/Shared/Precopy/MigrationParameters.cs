using System.Globalization;

namespace Migration.Shared.Precopy;

/// <summary>How precopy makes a guest that dirties faster than the link finish.</summary>
public enum ConvergeMethod
{
    /// <summary>Nothing: a guest that outruns the link fails as not converging, as early as that is clear.</summary>
    None,

    /// <summary>Throttle every vCPU, more each time rounds stop shrinking (QEMU's auto-converge).</summary>
    Auto,

    /// <summary>Hold each vCPU's own dirty rate under a ceiling, so only the vCPUs that write slow down.</summary>
    DirtyLimit,
}

/// <summary>Auto-converge's steps, as shares of a vCPU's time (QEMU's defaults: 20%, +10%, up to 99%).</summary>
/// <param name="Initial">The throttle the first time rounds stop shrinking.</param>
/// <param name="Increment">What each further time adds.</param>
/// <param name="Max">The most it takes.</param>
/// <param name="TailSlow">
/// Near the end, add only what the last round says is needed rather than a whole increment (QEMU's
/// <c>cpu-throttle-tailslow</c>): a guest loses less when a little more throttle is enough.
/// </param>
public sealed record ThrottleSettings(double Initial = 0.20, double Increment = 0.10, double Max = 0.99,
    bool TailSlow = false)
{
    public static readonly ThrottleSettings Qemu = new();

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Initial * 100:F0}%+{Increment * 100:F0}%..{Max * 100:F0}%{(TailSlow ? " tail-slow" : string.Empty)}");
}

/// <summary>
/// A downtime limit that starts low and rises by a step each round to the migration's limit (as KubeVirt raises its
/// downtime while a migration runs): a guest that can finish with a short pause gets one, and one that cannot still
/// finishes within the limit the user accepts.
/// </summary>
public sealed record DowntimeRamp(TimeSpan Start, TimeSpan Step)
{
    /// <summary>The limit for <paramref name="round"/> (0-based), never above <paramref name="max"/>.</summary>
    public TimeSpan LimitAt(int round, TimeSpan max)
    {
        var limit = Start + (Step * round);
        return limit < max ? limit : max;
    }

    /// <summary>Parses "START:STEP" in milliseconds, e.g. "50:25".</summary>
    public static DowntimeRamp Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string[] parts = text.Split(':');
        if (parts.Length == 2
            && double.TryParse(parts[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double start)
            && double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double step)
            && double.IsFinite(start) && double.IsFinite(step) && start > 0 && step >= 0 && start < 1e9 && step < 1e9)
        {
            return new DowntimeRamp(TimeSpan.FromMilliseconds(start), TimeSpan.FromMilliseconds(step));
        }

        throw new ArgumentException(
            $"a downtime ramp is START:STEP in milliseconds (e.g. 50:25, START > 0, STEP >= 0), got '{text}'.");
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Start.TotalMilliseconds:F0}:{Step.TotalMilliseconds:F0}");
}

/// <summary>
/// The settings a running migration takes from the user (QEMU's <c>migrate-set-parameters</c>): each applies from the
/// next round on, and the report records the settings every round ran with (rule C2).
/// </summary>
public sealed record MigrationParameters
{
    /// <summary>The most the guest may be stopped for.</summary>
    public required TimeSpan DowntimeLimit { get; init; }

    /// <summary>Optional: start lower and raise the limit each round up to <see cref="DowntimeLimit"/>.</summary>
    public DowntimeRamp? DowntimeRamp { get; init; }

    /// <summary>Bytes per second over all channels; null = uncapped.</summary>
    public double? MaxBandwidthBytesPerSecond { get; init; }

    /// <summary>Rounds after which a migration that does not fit the limit fails.</summary>
    public required int MaxRounds { get; init; }

    public required ConvergeMethod Converge { get; init; }

    public required ThrottleSettings Throttle { get; init; }

    /// <summary>
    /// <see cref="ConvergeMethod.DirtyLimit"/>'s ceiling for each vCPU in bytes per second; null: half of what the link
    /// moves, shared among the vCPUs, and halved again each time rounds still do not shrink.
    /// </summary>
    public double? DirtyLimitBytesPerSecond { get; init; }

    /// <summary>
    /// The delta-page cache's size in bytes (QEMU's <c>xbzrle-cache-size</c>); null when the migration started without
    /// delta pages, which it cannot take up later (the target is asked for them at <c>Begin</c>). 0 keeps the
    /// feature but sends every page whole until the cache grows again.
    /// </summary>
    public long? DeltaCacheBytes { get; init; }

    /// <summary>The downtime limit <paramref name="round"/> runs with (the ramp's step, or the limit).</summary>
    public TimeSpan DowntimeLimitAt(int round) => DowntimeRamp?.LimitAt(round, DowntimeLimit) ?? DowntimeLimit;

    /// <summary>Throws <see cref="ArgumentException"/> naming the setting when one is out of range.</summary>
    public void Validate(OptionNames? names = null)
    {
        names ??= OptionNames.Flags;
        if (DowntimeLimit <= TimeSpan.Zero)
        {
            throw new ArgumentException($"{names.Downtime} must be positive.");
        }

        if (MaxBandwidthBytesPerSecond is { } bandwidth && !(double.IsFinite(bandwidth) && bandwidth > 0))
        {
            throw new ArgumentException($"{names.MaxBandwidth} must be positive.");
        }

        if (MaxRounds < 1)
        {
            throw new ArgumentException($"{names.MaxRounds} must be at least 1.");
        }

        if (!Enum.IsDefined(Converge))
        {
            throw new ArgumentException($"{names.Converge} '{Converge}' is not a convergence method.");
        }

        var t = Throttle;
        if (!(InShare(t.Initial) && InShare(t.Increment) && InShare(t.Max) && t.Initial <= t.Max && t.Max > 0))
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"{names.Throttle}: initial, increment and max are percentages from 1 to 99 with initial <= max, got " +
                $"{t.Initial * 100:F0}, {t.Increment * 100:F0} and {t.Max * 100:F0}."));
        }

        if (DirtyLimitBytesPerSecond is { } ceiling && !(double.IsFinite(ceiling) && ceiling > 0))
        {
            throw new ArgumentException($"{names.DirtyLimit} must be positive.");
        }

        if (DeltaCacheBytes is < 0 or > Transport.DeltaPageCache.MaxBytes)
        {
            throw new ArgumentException($"{names.DeltaCache} must be from 0 to 1 TiB.");
        }
    }

    private static bool InShare(double share) => double.IsFinite(share) && share is >= 0.01 and <= 0.99;
}
