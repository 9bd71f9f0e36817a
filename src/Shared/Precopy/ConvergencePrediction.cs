using System.Globalization;
using Migration.Shared.Guest;

namespace Migration.Shared.Precopy;

/// <summary>What the engine expects after a round: whether and when precopy finishes, and if not, what would help.</summary>
/// <param name="Finishes">The migration is expected to finish with its settings (counting further slowing steps).</param>
/// <param name="RoundsLeft">Rounds expected before stop-and-copy, when it finishes on its own.</param>
/// <param name="SecondsLeft">Time expected before stop-and-copy, when it finishes on its own.</param>
/// <param name="Text">One line for the progress output, <c>query-migrate</c> and the log.</param>
public sealed record ConvergencePrediction(bool Finishes, int? RoundsLeft, double? SecondsLeft, string Text)
{
    /// <summary>
    /// The switchover's measured fixed cost alone is over the limit, and over the most a downtime ramp will reach.
    /// </summary>
    internal static bool FixedCostAloneOver(RoundOutcome round, double limitMs, double rampMaxMs) =>
        round.FixedCostMs >= limitMs && round.FixedCostMs >= rampMaxMs;

    /// <summary>
    /// Predicts from a round's figures: the guest dirties <c>D</c> pages/s, the link moves <c>S</c> pages that carry
    /// data per second. With D well under S each round leaves D/S of the last, so the rounds left are those that bring
    /// the remainder under the downtime limit's worth of pages. With D near or above S the remainder cannot shrink:
    /// it finishes only when a further slowing step is left (<paramref name="canSlowGuest"/>), or when the whole
    /// remainder already fits a limit the ramp will reach.
    /// </summary>
    internal static ConvergencePrediction Of(RoundOutcome round, double limitMs, double rampMaxMs, bool canSlowGuest,
        double throttleShare)
    {
        double send = Math.Max(round.DataPagesPerSecond, 1);
        double dirty = round.DirtyPagesPerSecond;
        double pagesThatFit = Math.Max(0, (limitMs - round.FixedCostMs) / 1000 * send);
        double ratio = dirty / send;
        string rates = Rates(round);
        if (FixedCostAloneOver(round, limitMs, rampMaxMs))
        {
            return new(false, null, null, string.Create(CultureInfo.InvariantCulture,
                $"cannot finish: the switchover's fixed cost alone is {round.FixedCostMs:F0} ms (final sync, state, " +
                $"streams, the target's rebuild and resume), over the {rampMaxMs:F0} ms limit; raise the limit"));
        }

        if (round.RemainingPages <= pagesThatFit)
        {
            return new(true, 0, 0, $"finishing: the rest fits the {limitMs:F0} ms limit ({rates})");
        }

        if (ratio < 0.9)
        {
            // remainder x ratio^k <= pagesThatFit
            int rounds = pagesThatFit <= 0 ? int.MaxValue
                : (int)Math.Ceiling(Math.Log(pagesThatFit / round.RemainingPages) / Math.Log(Math.Max(ratio, 1e-3)));
            if (rounds < 1000)
            {
                double seconds = 0;
                double left = round.RemainingPages;
                for (int i = 0; i < rounds; i++)
                {
                    seconds += left / send;
                    left *= ratio;
                }

                return new(true, rounds, seconds, string.Create(CultureInfo.InvariantCulture,
                    $"finishing: about {rounds} more rounds, {seconds:F1} s ({rates})"));
            }
        }

        double stopAllMs = round.ExpectedDowntimeMs; // the whole remainder in one stop
        if (stopAllMs <= rampMaxMs)
        {
            return new(true, null, null, string.Create(CultureInfo.InvariantCulture,
                $"finishing once the downtime ramp reaches {stopAllMs:F0} ms ({rates})"));
        }

        if (canSlowGuest)
        {
            return new(true, null, null, string.Create(CultureInfo.InvariantCulture,
                $"slowing the guest: throttle {throttleShare * 100:F0}%, it needs about " +
                $"{NeededThrottle(dirty, send, throttleShare) * 100:F0}% to finish ({rates})"));
        }

        return new(false, null, null, "cannot finish with these settings (" + rates + "); it would with " +
            Remedies(round, throttleShare, stopAllMs));
    }

    /// <summary>The share of time to take from every vCPU so the guest dirties at most half what the link moves.</summary>
    internal static double NeededThrottle(double dirtyPagesPerSecond, double sendPagesPerSecond, double throttleShare)
    {
        double unthrottled = dirtyPagesPerSecond / (1 - Math.Min(throttleShare, VcpuThrottle.MaxShare));
        return unthrottled <= 0 ? 0 : Math.Clamp(1 - (GuestSlowdown.TriggerShare * sendPagesPerSecond / unthrottled),
            0, VcpuThrottle.MaxShare);
    }

    /// <summary>What would let the migration of <paramref name="round"/> finish.</summary>
    internal static string RemediesOf(RoundOutcome round, double throttleShare) =>
        Remedies(round, throttleShare, round.ExpectedDowntimeMs);

    private static string Remedies(RoundOutcome round, double throttleShare, double stopAllMs)
    {
        double bytesPerPage = round.DataPagesPerSecond > 0
            ? round.BytesPerSecond / round.DataPagesPerSecond
            : PageGeometry.PageSize;
        double bandwidth = round.DirtyPagesPerSecond / GuestSlowdown.TriggerShare * bytesPerPage;
        double throttle = NeededThrottle(round.DirtyPagesPerSecond, round.DataPagesPerSecond, throttleShare);
        return string.Create(CultureInfo.InvariantCulture,
            $"a bandwidth of at least {bandwidth / 1e6:F0} MB/s, a throttle of {throttle * 100:F0}% " +
            $"(--converge auto, or a higher --throttle maximum), or a downtime limit of {stopAllMs:F0} ms");
    }

    private static string Rates(RoundOutcome round) => string.Create(CultureInfo.InvariantCulture,
        $"guest dirties {round.DirtyPagesPerSecond * PageGeometry.PageSize / 1e6:F0} MB/s, " +
        $"link moves {round.BytesPerSecond / 1e6:F0} MB/s");
}
