using Migration.Shared.Guest;

namespace Migration.Shared.Precopy;

/// <summary>
/// The engine's half of convergence: after each round's sync it decides whether the guest dirties too fast for the
/// link and slows it, by throttling every vCPU (auto-converge) or by a dirty-rate ceiling per vCPU (dirty limit). The
/// guest's half, the sleeping, is <see cref="VcpuThrottle"/>.
/// </summary>
/// <remarks>
/// The trigger is QEMU's: a round in which the guest dirtied more than half the bytes the link moved is a high round,
/// and every second high round slows the guest one step. The first step is the initial throttle; each later one adds
/// the increment (or, tail-slow, only what the last round says is missing), up to the maximum. The dirty limit's
/// ceiling, when the user gives none, starts at half the link's rate shared among the vCPUs that write, and halves at
/// each step, down to 100 KB/s per vCPU.
/// </remarks>
internal sealed class GuestSlowdown(VcpuThrottle throttle)
{
    /// <summary>QEMU's <c>throttle-trigger-threshold</c>: dirtied above this share of what was sent is high.</summary>
    public const double TriggerShare = 0.5;

    /// <summary>
    /// The lowest ceiling the dirty limit derives: 100 KB/s a vCPU, a tenth of QEMU's default <c>vcpu-dirty-limit</c>,
    /// so a guest on a slow link still has steps left where QEMU's fixed ceiling would leave it running out its rounds.
    /// </summary>
    public const double FloorCeilingBytesPerSecond = 100e3;

    /// <summary>A vCPU that did less than this share of a round's dirtying does not count as a writer.</summary>
    private const double WriterShare = 0.05;

    private ConvergeMethod _method = ConvergeMethod.None;
    private int _highRounds;
    private long[] _dirtiedAtLastRound = new long[throttle.Count];

    /// <summary>Times the guest was slowed a step.</summary>
    public int Steps { get; private set; }

    /// <summary>Rounds since the last step: a step needs a round or two before the rounds show what it did.</summary>
    public int RoundsSinceStep { get; private set; } = int.MaxValue;

    /// <summary>
    /// Whether the guest may still finish by slowing: a step is left, or the last one is too recent to judge.
    /// </summary>
    public bool MaySlowEnough(MigrationParameters parameters) => CanEscalate(parameters) || RoundsSinceStep < 2;

    /// <summary>The dirty limit's ceiling per vCPU in force, bytes per second; null when none is.</summary>
    public double? CeilingBytesPerSecond { get; private set; }

    /// <summary>The auto-converge throttle in force (0 when none).</summary>
    public double Share { get; private set; }

    /// <summary>
    /// Whether another step can still slow the guest: auto-converge below its maximum, or a derived dirty-limit ceiling
    /// above its floor. A method that cannot has nothing left to make a busy guest finish.
    /// </summary>
    public bool CanEscalate(MigrationParameters parameters) => parameters.Converge switch
    {
        ConvergeMethod.Auto => _method != ConvergeMethod.Auto || Share < parameters.Throttle.Max,
        ConvergeMethod.DirtyLimit => _method != ConvergeMethod.DirtyLimit || CeilingBytesPerSecond is null
            || (parameters.DirtyLimitBytesPerSecond is null && CeilingBytesPerSecond > FloorCeilingBytesPerSecond),
        _ => false,
    };

    /// <summary>
    /// After a round's sync: <paramref name="dirtiedBytes"/> the guest dirtied and <paramref name="sentBytes"/> the
    /// link moved during it, at <paramref name="linkBytesPerSecond"/>. Applies the parameters' method (a method
    /// changed since the last round replaces the old one's slowdown). Returns whether the guest was slowed a step.
    /// </summary>
    public bool AfterRound(long dirtiedBytes, long sentBytes, double linkBytesPerSecond, MigrationParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (parameters.Converge != _method)
        {
            Lift();
            _method = parameters.Converge;
        }

        RoundsSinceStep = RoundsSinceStep == int.MaxValue ? int.MaxValue : RoundsSinceStep + 1;
        long[] perVcpu = [.. throttle.Vcpus.Select(v => v.PagesDirtied)];
        long[] roundDirtied = [.. perVcpu.Select((d, i) => d - _dirtiedAtLastRound[i])];
        _dirtiedAtLastRound = perVcpu;
        if (_method == ConvergeMethod.Auto && Share > parameters.Throttle.Max)
        {
            SetShare(parameters.Throttle.Max); // the user lowered the maximum
        }

        double threshold = sentBytes * TriggerShare;
        if (_method == ConvergeMethod.None || dirtiedBytes <= threshold || ++_highRounds < 2)
        {
            return false;
        }

        _highRounds = 0;
        if (!CanEscalate(parameters))
        {
            return false;
        }

        Steps++;
        RoundsSinceStep = 0;
        if (_method == ConvergeMethod.Auto)
        {
            SetShare(NextShare(Share, dirtiedBytes, threshold, parameters.Throttle));
        }
        else
        {
            long total = roundDirtied.Sum(); // none counted (stores no vCPU made): every vCPU shares the budget
            int writers = total == 0 ? throttle.Count : roundDirtied.Count(d => d >= WriterShare * total);
            double ceiling = parameters.DirtyLimitBytesPerSecond
                ?? Math.Max(FloorCeilingBytesPerSecond,
                    CeilingBytesPerSecond / 2 ?? linkBytesPerSecond * TriggerShare / writers);
            CeilingBytesPerSecond = ceiling;
            throttle.SetCeiling(ceiling / Guest.PageGeometry.PageSize);
        }

        return true;
    }

    /// <summary>Lifts every throttle and ceiling: the guest runs at full speed again.</summary>
    public void Lift()
    {
        throttle.Reset();
        Share = 0;
        CeilingBytesPerSecond = null;
        _highRounds = 0;
    }

    /// <summary>
    /// Auto-converge's next throttle from <paramref name="current"/>: the initial share the first time, then the
    /// increment, or with tail-slow only what brings the guest's dirtying down to <paramref name="threshold"/> bytes
    /// (the share of CPU it keeps scaled by threshold / dirtied), never more than the increment; at most the maximum.
    /// </summary>
    internal static double NextShare(double current, double dirtiedBytes, double threshold, ThrottleSettings settings)
    {
        if (current <= 0)
        {
            return Math.Min(settings.Initial, settings.Max);
        }

        double step = settings.Increment;
        if (settings.TailSlow && dirtiedBytes > 0)
        {
            double keeps = 1 - current;
            double ideal = keeps * (threshold / dirtiedBytes);
            step = Math.Clamp(keeps - ideal, 0.01, settings.Increment);
        }

        return Math.Min(Math.Round(current + step, 4), settings.Max);
    }

    private void SetShare(double share)
    {
        Share = share;
        throttle.SetShare(share);
    }
}
