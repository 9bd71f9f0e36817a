using System.CommandLine;
using System.Globalization;
using Migration.Shared.Cli;
using Migration.Shared.Precopy;

namespace Migration.Source.Cli;

/// <summary>
/// The flags that make a busy guest finish: the method (auto-converge or a dirty-rate limit), the throttle's steps,
/// the dirty limit's ceiling and a downtime ramp. The management API's SetMigrationParameters changes the same settings
/// while a migration runs.
/// </summary>
internal sealed class ConvergenceOptions
{
    private static readonly MigrationOptions Defaults = MigrationOptions.Defaults;

    public Option<ConvergeMethod> Method { get; } = CliOptions.Choice("--converge",
        "How a guest that dirties faster than the link is made to finish (auto: throttle every vCPU, more each round " +
        "that does not shrink; dirtylimit: hold each vCPU's own dirty rate under a ceiling)", Defaults.Converge);

    public Option<string> Throttle { get; } = new("--throttle")
    {
        Description = "Auto-converge's steps in percent of vCPU time: INITIAL,INCREMENT,MAX",
        DefaultValueFactory = _ => string.Create(CultureInfo.InvariantCulture,
            $"{Defaults.Throttle.Initial * 100:F0},{Defaults.Throttle.Increment * 100:F0}," +
            $"{Defaults.Throttle.Max * 100:F0}"),
    };

    public Option<OnOff> TailSlow { get; } = CliOptions.Switch("--throttle-tailslow",
        "Near the end, raise the throttle only by what the last round says is missing", Defaults.Throttle.TailSlow);

    public Option<ByteRate?> DirtyLimit { get; } = CliOptions.Rate("--dirty-limit",
        "With --converge dirtylimit: each vCPU's ceiling, e.g. 20MB/s (default: half the link's rate shared among " +
        "the vCPUs that write, halved while rounds do not shrink)", Defaults.DirtyLimitBytesPerSecond);

    public Option<string?> DowntimeRamp { get; } = new("--downtime-ramp")
    {
        Description = "START:STEP in ms: start the downtime limit at START and raise it by STEP each round, up to " +
            "--downtime-ms",
    };

    public IEnumerable<Option> All => [Method, Throttle, TailSlow, DirtyLimit, DowntimeRamp];

    /// <summary>The options with these flags' values; throws <see cref="ArgumentException"/> naming a bad one.</summary>
    public MigrationOptions Bind(ParseResult parse, MigrationOptions options)
    {
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentNullException.ThrowIfNull(options);
        return options with
        {
            Converge = parse.GetValue(Method),
            Throttle = ParseThrottle(parse.GetValue(Throttle) ?? string.Empty, parse.GetValue(TailSlow) == OnOff.On),
            DirtyLimitBytesPerSecond = parse.GetValue(DirtyLimit)?.BytesPerSecond,
            DowntimeRamp = parse.GetValue(DowntimeRamp) is { } ramp ? Shared.Precopy.DowntimeRamp.Parse(ramp) : null,
        };
    }

    /// <summary>"20,10,99" as shares; the range is checked with the other settings.</summary>
    internal static ThrottleSettings ParseThrottle(string text, bool tailSlow)
    {
        string[] parts = text.Split(',');
        var values = parts.Select(p => double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture,
            out double v) ? v : double.NaN).ToArray();
        if (values.Length != 3 || values.Any(v => !double.IsFinite(v)))
        {
            throw new ArgumentException(
                $"--throttle is INITIAL,INCREMENT,MAX in percent (e.g. 20,10,99), got '{text}'.");
        }

        return new ThrottleSettings(values[0] / 100, values[1] / 100, values[2] / 100, tailSlow);
    }
}
