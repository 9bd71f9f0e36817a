using Migration.Shared.Precopy;

namespace Migration.Shared.Tests.Precopy;

/// <summary>The rule users tune most, pinned: when precopy stops and copies, goes on, or gives up.</summary>
public sealed class ConvergencePolicyTests
{
    /// <summary>A fresh policy per decision: it keeps each migration's trend, and these decisions are unrelated.</summary>
    private static ConvergencePolicy Policy =>
        new(TimeSpan.FromMilliseconds(300), maxRounds: 30, TimeSpan.FromMinutes(5));

    /// <summary>
    /// A round that leaves <paramref name="remaining"/> pages at 10 000 data pages/s (1 page = 0.1 ms).
    /// </summary>
    private static RoundOutcome Round(int round, long remaining, long previous, double dataRate = 10_000,
        TimeSpan? elapsed = null) =>
        new(round, remaining, previous, dataRate, DirtyPagesPerSecond: 500, BytesPerSecond: 40e6,
            elapsed ?? TimeSpan.FromSeconds(1));

    [Fact]
    public void ExpectedDowntime_IsRemainingPagesAtTheDataPageRate()
    {
        Assert.Equal(250, Round(3, remaining: 2500, previous: 2500).ExpectedDowntimeMs, 6);
        // at least 1 page/s
        Assert.Equal(2_500_000, Round(3, remaining: 2500, previous: 2500, dataRate: 0).ExpectedDowntimeMs, 6);
    }

    [Fact]
    public void StopsAndCopies_OnceTheRestFitsTheLimit_AndRoundsNoLongerShrinkIt()
    {
        var decision = Policy.Decide(Round(4, remaining: 2000, previous: 2400)); // 200 ms, shrank by a sixth
        var stop = Assert.IsType<ConvergenceDecision.StopAndCopy>(decision);
        Assert.Equal(200, stop.ExpectedDowntimeMs, 6);
    }

    [Fact]
    public void GoesOn_WhileARoundCutsTheRestByAQuarterOrMore_EvenIfItFits()
    {
        // 200 ms fits, but the round cut 4000 pages to 2000: a few more short rounds make the final set smaller.
        Assert.IsType<ConvergenceDecision.ContinueRounds>(Policy.Decide(Round(2, remaining: 2000, previous: 4000)));
        // Exactly three quarters is not a quarter's cut.
        Assert.IsType<ConvergenceDecision.StopAndCopy>(Policy.Decide(Round(2, remaining: 3000, previous: 4000)));
    }

    [Fact]
    public void NearTheRoundLimit_ShrinkingNoLongerDelaysTheStop()
    {
        Assert.IsType<ConvergenceDecision.ContinueRounds>(Policy.Decide(Round(27, remaining: 2000, previous: 4000)));
        Assert.IsType<ConvergenceDecision.StopAndCopy>(Policy.Decide(Round(28, remaining: 2000, previous: 4000)));
    }

    [Fact]
    public void GoesOn_WhileTheRestDoesNotFit()
    {
        Assert.IsType<ConvergenceDecision.ContinueRounds>(Policy.Decide(Round(5, remaining: 40_000, previous: 40_000)));
    }

    [Fact]
    public void GivesUp_AtTheRoundLimit_WithTheNumbersThatExplainWhy()
    {
        var decision = Policy.Decide(Round(29, remaining: 40_000, previous: 40_000));
        var give = Assert.IsType<ConvergenceDecision.NotConverging>(decision);
        Assert.Contains("after 30 rounds 40000 pages are still dirty", give.Reason, StringComparison.Ordinal);
        Assert.Contains("500 pages/s", give.Reason, StringComparison.Ordinal);
        Assert.Contains("40 MB/s", give.Reason, StringComparison.Ordinal);
        Assert.Contains("expected downtime 4000 ms exceeds the 300 ms limit", give.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void GivesUp_AfterTheTimeout()
    {
        var decision = Policy.Decide(Round(3, remaining: 40_000, previous: 40_000, elapsed: TimeSpan.FromMinutes(6)));
        Assert.IsType<ConvergenceDecision.NotConverging>(decision);
    }

    [Fact]
    public void AtTheLimits_ARestThatFitsStillStops()
    {
        var decision = Policy.Decide(Round(29, remaining: 100, previous: 100, elapsed: TimeSpan.FromMinutes(6)));
        Assert.IsType<ConvergenceDecision.StopAndCopy>(decision);
    }

    [Fact]
    public void TheOptionsRecord_SetsTheLimits()
    {
        var policy = new ConvergencePolicy(MigrationOptions.Defaults with
        {
            DowntimeLimit = TimeSpan.FromMilliseconds(50),
            MaxRounds = 3,
        });
        Assert.IsType<ConvergenceDecision.ContinueRounds>(policy.Decide(Round(0, remaining: 1000, previous: 1000)));
        Assert.IsType<ConvergenceDecision.NotConverging>(policy.Decide(Round(2, remaining: 1000, previous: 1000)));
    }

    [Fact]
    public void AFixedCostOverTheLimit_IsWaitedOut_ForItsPatience_ThenGivenUp()
    {
        // Nothing left to send, but the last rehearsals put the switchover at 420 ms against 300 (one slow rehearsal on
        // a loaded machine counts twice for three). Rounds with nothing to send come milliseconds apart: two of them
        // are not evidence, so the policy waits between rounds and re-measures until its patience runs out.
        var policy = Policy;
        RoundOutcome Held(int round, double seconds, double fixedMs) =>
            Round(round, remaining: 0, previous: 0, elapsed: TimeSpan.FromSeconds(seconds)) with
            {
                FixedCostMs = fixedMs,
            };

        var waits = Enumerable.Range(19, 4).Select(r => policy.Decide(Held(r, 20 + ((r - 19) * 0.6), 420))).ToList();
        Assert.All(waits, d => Assert.Equal(ConvergencePolicy.FixedCostPause,
            Assert.IsType<ConvergenceDecision.ContinueRounds>(d).Pause));
        // the slow sample aged out: the switchover fits again and precopy stops
        Assert.IsType<ConvergenceDecision.StopAndCopy>(policy.Decide(Held(23, 22.4, 60)));

        var stays = Policy;
        Assert.IsType<ConvergenceDecision.ContinueRounds>(stays.Decide(Held(19, 20, 420)));
        Assert.IsType<ConvergenceDecision.ContinueRounds>(stays.Decide(Held(20, 22.9, 420)));
        var give = Assert.IsType<ConvergenceDecision.NotConverging>(stays.Decide(Held(21, 23.1, 420)));
        Assert.Contains("fixed cost alone is 420 ms", give.Reason, StringComparison.Ordinal);
    }
}
