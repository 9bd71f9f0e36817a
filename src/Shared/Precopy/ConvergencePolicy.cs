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

    /// <summary>Another round.</summary>
    public sealed record ContinueRounds : ConvergenceDecision;

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

/// <summary>The engine's rule for when to stop and copy.</summary>
/// <remarks>
/// Stop once the whole expected downtime fits the limit (pages and the switchover's measured fixed cost, nothing capped),
/// but not while rounds still cut what is left by a quarter or more
/// (unless that would run into the round limit): stop-and-copy also hashes every in-use page and waits for the target's
/// verification, which the estimate does not see, so a smaller final set is worth a few short rounds. A hot set that
/// keeps the remainder level ends this at once. A migration that reaches the round limit or the timeout without
/// fitting fails with the numbers that explain why.
/// </remarks>
internal sealed class ConvergencePolicy(TimeSpan downtimeLimit, int maxRounds, TimeSpan timeout) : IConvergencePolicy
{
    public ConvergencePolicy(MigrationOptions options)
        : this(options.DowntimeLimit, options.MaxRounds, options.Timeout)
    {
    }

    public ConvergenceDecision Decide(RoundOutcome round)
    {
        double expectedMs = round.ExpectedDowntimeMs;
        bool shrinking = round.RemainingPages < round.PreviousRemainingPages * 3 / 4 && round.Round + 2 < maxRounds;
        if (expectedMs <= downtimeLimit.TotalMilliseconds && !shrinking)
        {
            return new ConvergenceDecision.StopAndCopy(expectedMs);
        }

        if (round.Round + 1 >= maxRounds || round.Elapsed > timeout)
        {
            return new ConvergenceDecision.NotConverging(string.Create(CultureInfo.InvariantCulture,
                $"did not converge: after {round.Round + 1} rounds {round.RemainingPages} pages are still dirty " +
                $"(guest dirties {round.DirtyPagesPerSecond:F0} pages/s, " +
                $"link moves {round.BytesPerSecond / 1e6:F0} MB/s); " +
                $"expected downtime {expectedMs:F0} ms exceeds the {downtimeLimit.TotalMilliseconds:F0} ms limit") +
                (round.FixedCostMs > downtimeLimit.TotalMilliseconds
                    ? string.Create(CultureInfo.InvariantCulture,
                        $"; the switchover's fixed cost alone is {round.FixedCostMs:F0} ms (final sync, state, " +
                        $"streams, the target's rebuild and resume), so nothing can fit: raise the limit")
                    : string.Create(CultureInfo.InvariantCulture,
                        $", of which {round.FixedCostMs:F0} ms is the switchover's fixed cost")));
        }

        return ConvergenceDecision.Continue;
    }
}
