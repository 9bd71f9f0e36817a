using System.Globalization;

namespace Migration.Shared.Precopy;

/// <summary>What precopy knows after a round's sync: what is left and how fast things move.</summary>
internal readonly record struct RoundOutcome(
    int Round,
    long RemainingPages,
    long PreviousRemainingPages,
    double DataPagesPerSecond,
    double DirtyPagesPerSecond,
    double BytesPerSecond,
    TimeSpan Elapsed,
    double FixedCostMs = 0)
{
    /// <summary>The settings this round ran with (live parameters); null: the policy's own.</summary>
    public MigrationParameters? Parameters { get; init; }

    /// <summary>A convergence method still has a step left to slow the guest with.</summary>
    public bool CanSlowGuest { get; init; }

    /// <summary>The throttle the guest ran under (the largest share of any vCPU).</summary>
    public double ThrottleShare { get; init; }

    /// <summary>
    /// Remaining pages at the rate the last round moved pages that carry data (<see cref="PagesMs"/>), plus the
    /// switchover's fixed cost as last measured (<see cref="FixedCostMs"/>: the final sync, the state save, closing the
    /// streams and the Complete round trip with the target's rebuild and resume; see <c>SwitchoverCost</c>). A page
    /// costs what it cost on the wire, so LZ4 is credited, which QEMU's full-page-over-bandwidth estimate is not (with
    /// compressible pages it never converges).
    /// </summary>
    public double ExpectedDowntimeMs => PagesMs + FixedCostMs;

    /// <summary>The remaining pages' share of the estimate.</summary>
    public double PagesMs => RemainingPages / Math.Max(DataPagesPerSecond, 1) * 1000;
}

/// <summary>What to do after a round.</summary>
internal abstract record ConvergenceDecision
{
    public static readonly ConvergenceDecision Continue = new ContinueRounds();

    /// <summary>
    /// Another round, after <paramref name="Pause"/>: a migration held back only by the switchover's fixed cost waits
    /// a moment for the machine's load to pass before it measures that cost again.
    /// </summary>
    public sealed record ContinueRounds(TimeSpan Pause = default) : ConvergenceDecision;

    /// <summary>Pause the guest and send the rest; the estimate is expected to hold.</summary>
    public sealed record StopAndCopy(double ExpectedDowntimeMs) : ConvergenceDecision;

    /// <summary>Give up: the limits are reached and the rest does not fit the downtime limit.</summary>
    public sealed record NotConverging(string Reason) : ConvergenceDecision;
}

/// <summary>Decides, after each round, whether to go on, stop and copy, or give up.</summary>
internal interface IConvergencePolicy
{
    ConvergenceDecision Decide(RoundOutcome round);
}

/// <summary>The engine's rule for when to stop and copy, go on, or give up.</summary>
/// <remarks>
/// <para>
/// Stop once the whole expected downtime fits the limit (pages and the switchover's measured fixed cost, nothing capped),
/// but not while rounds still cut what is left by a quarter or more
/// (unless that would run into the round limit): stop-and-copy also hashes every in-use page and waits for the target's
/// verification, which the estimate does not see, so a smaller final set is worth a few short rounds. A hot set that
/// keeps the remainder level ends this at once.
/// </para>
/// <para>
/// Give up at the round limit or the timeout, or as soon as the prediction says the migration cannot finish with its
/// settings (no slowing step left, the remainder not shrinking) two rounds running, from the third round on: a user
/// hears within five rounds what would let it finish, rather than after thirty.
/// </para>
/// <para>
/// The switchover's fixed cost alone over the limit is another matter: it is measured (rehearsals), and on a loaded
/// machine one slow rehearsal counts twice for three rehearsals (the costliest, and the spread it opens). Rounds with
/// nothing left to send follow each other within milliseconds, so two of them prove nothing. Such a migration waits
/// <see cref="FixedCostPause"/> between rounds and gives up only when the cost has stayed over the limit for
/// <see cref="FixedCostPatience"/>.
/// </para>
/// </remarks>
internal sealed class ConvergencePolicy(TimeSpan downtimeLimit, int maxRounds, TimeSpan timeout) : IConvergencePolicy
{
    /// <summary>Rounds in a row the prediction must say "cannot finish" before the migration gives up early.</summary>
    public const int HopelessRounds = 2;

    /// <summary>How long the switchover's fixed cost alone may stay over the limit before the migration gives up.</summary>
    public static readonly TimeSpan FixedCostPatience = TimeSpan.FromSeconds(3);

    /// <summary>The wait between rounds while the switchover's fixed cost alone is over the limit.</summary>
    public static readonly TimeSpan FixedCostPause = TimeSpan.FromMilliseconds(500);

    private TimeSpan? _fixedCostOverSince;

    private int _hopeless;
    private readonly List<int?> _roundsLeft = [];

    public ConvergencePolicy(MigrationOptions options)
        : this(options.DowntimeLimit, options.MaxRounds, options.Timeout)
    {
    }

    /// <summary>The prediction made at the last decision.</summary>
    public ConvergencePrediction? Prediction { get; private set; }

    public ConvergenceDecision Decide(RoundOutcome round)
    {
        var parameters = round.Parameters;
        double limitMs = (parameters?.DowntimeLimitAt(round.Round) ?? downtimeLimit).TotalMilliseconds;
        double rampMaxMs = (parameters?.DowntimeLimit ?? downtimeLimit).TotalMilliseconds;
        int rounds = parameters?.MaxRounds ?? maxRounds;
        var prediction = ConvergencePrediction.Of(round, limitMs, rampMaxMs, round.CanSlowGuest,
            round.ThrottleShare);
        Prediction = prediction;
        double expectedMs = round.ExpectedDowntimeMs;
        bool shrinking = round.RemainingPages < round.PreviousRemainingPages * 3 / 4 && round.Round + 2 < rounds;
        if (expectedMs <= limitMs && !shrinking)
        {
            return new ConvergenceDecision.StopAndCopy(expectedMs);
        }

        // The trend: a prediction of rounds left that has not fallen in two rounds is chasing its tail (the dirty rate
        // rises as rounds get shorter), whatever each round's estimate says.
        _roundsLeft.Add(prediction.RoundsLeft);
        int? left = prediction.RoundsLeft;
        bool stalled = _roundsLeft.Count >= 3 && left > 0 && _roundsLeft[^3] is int before && left >= before;
        if (stalled && !round.CanSlowGuest)
        {
            string why = string.Create(CultureInfo.InvariantCulture,
                $"cannot finish with these settings: for two rounds the rounds left have not fallen (about {left}, " +
                $"guest dirties {round.DirtyPagesPerSecond * Guest.PageGeometry.PageSize / 1e6:F0} MB/s and " +
                $"rising as rounds shorten); it would with ");
            prediction = prediction with
            {
                Finishes = false,
                Text = why + ConvergencePrediction.RemediesOf(round, round.ThrottleShare),
            };
            Prediction = prediction;
        }

        // Only the measured fixed cost stands in the way: not hopeless until it has stayed there a while.
        bool fixedCostOver = ConvergencePrediction.FixedCostAloneOver(round, limitMs, rampMaxMs);
        _fixedCostOverSince = fixedCostOver ? _fixedCostOverSince ?? round.Elapsed : null;
        bool fixedCostStays = round.Elapsed - _fixedCostOverSince >= FixedCostPatience;
        bool level = round.RemainingPages >= round.PreviousRemainingPages * 4 / 5;
        _hopeless = !fixedCostOver && !prediction.Finishes && !round.CanSlowGuest && (level || stalled)
            && round.Round >= 2
            ? _hopeless + 1
            : 0;
        if (round.Round + 1 >= rounds || round.Elapsed > timeout || _hopeless >= HopelessRounds || fixedCostStays)
        {
            return new ConvergenceDecision.NotConverging(string.Create(CultureInfo.InvariantCulture,
                $"did not converge: after {round.Round + 1} rounds {round.RemainingPages} pages are still dirty " +
                $"(guest dirties {round.DirtyPagesPerSecond:F0} pages/s, " +
                $"link moves {round.BytesPerSecond / 1e6:F0} MB/s); " +
                $"expected downtime {expectedMs:F0} ms exceeds the {limitMs:F0} ms limit") +
                (round.FixedCostMs > limitMs
                    ? string.Create(CultureInfo.InvariantCulture,
                        $"; the switchover's fixed cost alone is {round.FixedCostMs:F0} ms (final sync, state, " +
                        $"streams, the target's rebuild and resume), so nothing can fit: raise the limit")
                    : string.Create(CultureInfo.InvariantCulture,
                        $", of which {round.FixedCostMs:F0} ms is the switchover's fixed cost") +
                        (prediction.Finishes ? string.Empty : "; " + prediction.Text)));
        }

        return fixedCostOver ? new ConvergenceDecision.ContinueRounds(FixedCostPause) : ConvergenceDecision.Continue;
    }
}
