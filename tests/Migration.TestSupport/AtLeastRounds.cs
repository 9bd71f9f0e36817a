using Migration.Shared.Precopy;

namespace Migration.TestSupport;

/// <summary>
/// Precopy runs at least <paramref name="rounds"/> rounds before it may stop and copy, so pages go again after round 0
/// and a later round exists to race or strike in; every other decision is the wrapped policy's.
/// </summary>
internal sealed class AtLeastRounds(IConvergencePolicy inner, int rounds) : IConvergencePolicy
{
    public ConvergenceDecision Decide(RoundOutcome round)
    {
        var decision = inner.Decide(round);
        return decision is ConvergenceDecision.StopAndCopy && round.Round + 1 < rounds
            ? ConvergenceDecision.Continue
            : decision;
    }
}
