using Migration.Management;
using Migration.Shared.Guest;
using Migration.Shared.Precopy;

namespace Migration.Shared.Tests.Precopy;

/// <summary>
/// The engine's half of convergence pinned: when auto-converge and the dirty limit slow the guest and by how much, what
/// the prediction says, when a hopeless migration gives up, and how live settings are checked.
/// </summary>
public sealed class ConvergenceMethodTests
{
    private static readonly MigrationParameters Auto = MigrationOptions.Defaults.Parameters with
    {
        Converge = ConvergeMethod.Auto,
    };

    [Fact]
    public void AutoConverge_StepsAsQemuDoes_OnEverySecondHighRound()
    {
        var throttle = new VcpuThrottle(2, TimeProvider.System);
        var slowdown = new GuestSlowdown(throttle);
        var shares = new List<double>();
        for (int round = 0; round < 24; round++)
        {
            // dirtied 100 MB while the link moved 120: above half, a high round
            slowdown.AfterRound(100_000_000, 120_000_000, 120e6, Auto);
            shares.Add(Math.Round(throttle[1].Share, 2));
        }

        Assert.Equal([0, 0.2, 0.2, 0.3, 0.3, 0.4], shares.Take(6));
        Assert.Equal(0.99, shares[^1]); // 20, 30, ..., 90, then the 99% ceiling
        Assert.False(slowdown.CanEscalate(Auto));
        Assert.False(slowdown.MaySlowEnough(Auto)); // and the last step is rounds old

        var fresh = new GuestSlowdown(new VcpuThrottle(1, TimeProvider.System));
        var capped = Auto with { Throttle = ThrottleSettings.Qemu with { Max = 0.2 } };
        fresh.AfterRound(100_000_000, 120_000_000, 120e6, capped);
        fresh.AfterRound(100_000_000, 120_000_000, 120e6, capped); // the one step there is
        Assert.False(fresh.CanEscalate(capped));
        Assert.True(fresh.MaySlowEnough(capped)); // not yet seen at work: no giving up on it
        fresh.AfterRound(100_000_000, 120_000_000, 120e6, capped);
        fresh.AfterRound(100_000_000, 120_000_000, 120e6, capped);
        Assert.False(fresh.MaySlowEnough(capped));

        slowdown.AfterRound(10_000_000, 120_000_000, 120e6, Auto); // a low round changes nothing
        Assert.Equal(0.99, throttle[0].Share);
        slowdown.Lift();
        Assert.Equal((0d, 0d), (throttle[0].Share, throttle[1].Share));
    }

    [Fact]
    public void AutoConverge_NeverThrottlesAGuestThatDirtiesLessThanHalfTheLink()
    {
        var throttle = new VcpuThrottle(1, TimeProvider.System);
        var slowdown = new GuestSlowdown(throttle);
        for (int round = 0; round < 10; round++)
        {
            slowdown.AfterRound(59_000_000, 120_000_000, 120e6, Auto);
        }

        Assert.Equal((0d, 0), (throttle[0].Share, slowdown.Steps));
    }

    [Theory]
    [InlineData(0, 0.2)] // the first step is the initial share
    [InlineData(0.2, 0.3)] // then the increment
    [InlineData(0.95, 0.99)] // never above the maximum
    public void NextShare_IsInitialThenIncrement(double current, double next) =>
        Assert.Equal(next, GuestSlowdown.NextShare(current, 100, 50, ThrottleSettings.Qemu), 6);

    [Fact]
    public void TailSlow_AddsOnlyWhatTheLastRoundSaysIsMissing()
    {
        var tail = ThrottleSettings.Qemu with { TailSlow = true };
        // at 50%, dirtying 55 against a threshold of 50: keeping 45% of the CPU would do, so +5 points, not +10
        Assert.Equal(0.5 + 0.0455, GuestSlowdown.NextShare(0.5, 55, 50, tail), 3);
        // far from it: the whole increment
        Assert.Equal(0.6, GuestSlowdown.NextShare(0.5, 500, 50, tail), 6);
    }

    [Fact]
    public void DirtyLimit_StartsAtHalfTheLinkSharedAmongTheWriters_ThenHalves_DownToItsFloor()
    {
        var throttle = new VcpuThrottle(4, TimeProvider.System);
        var slowdown = new GuestSlowdown(throttle);
        var limit = Auto with { Converge = ConvergeMethod.DirtyLimit };
        var ceilings = new List<double?>();
        for (int round = 0; round < 40; round++)
        {
            slowdown.AfterRound(100_000_000, 120_000_000, 120e6, limit);
            ceilings.Add(slowdown.CeilingBytesPerSecond);
        }

        // no vCPU's stores were counted, so all four share the budget: 60 MB/s / 4
        Assert.Equal([null, 15e6, 15e6, 7.5e6, 7.5e6, 3.75e6], ceilings.Take(6));
        Assert.Equal(GuestSlowdown.FloorCeilingBytesPerSecond, ceilings[^1]);
        Assert.All(throttle.Vcpus, v => Assert.Equal(
            GuestSlowdown.FloorCeilingBytesPerSecond / PageGeometry.PageSize, v.Ceiling!.Value, 6));
        Assert.False(slowdown.CanEscalate(limit));

        // the user's own ceiling is used as given, and cannot be stepped further
        var given = limit with { DirtyLimitBytesPerSecond = 40e6 };
        var mine = new GuestSlowdown(throttle);
        mine.AfterRound(100_000_000, 120_000_000, 120e6, given);
        mine.AfterRound(100_000_000, 120_000_000, 120e6, given);
        Assert.Equal(40e6, mine.CeilingBytesPerSecond);
        Assert.False(mine.CanEscalate(given));
    }

    [Fact]
    public void ChangingTheMethod_LiftsTheOldOnesSlowdown()
    {
        var throttle = new VcpuThrottle(1, TimeProvider.System);
        var slowdown = new GuestSlowdown(throttle);
        slowdown.AfterRound(100_000_000, 120_000_000, 120e6, Auto);
        slowdown.AfterRound(100_000_000, 120_000_000, 120e6, Auto);
        Assert.Equal(0.2, throttle[0].Share);

        slowdown.AfterRound(100_000_000, 120_000_000, 120e6, Auto with { Converge = ConvergeMethod.None });
        Assert.Equal(0, throttle[0].Share);

        slowdown.AfterRound(100_000_000, 120_000_000, 120e6, Auto);
        var lowered = Auto with { Throttle = ThrottleSettings.Qemu with { Max = 0.1 } };
        slowdown.AfterRound(100_000_000, 120_000_000, 120e6, lowered);
        Assert.Equal(0.1, throttle[0].Share); // a lowered maximum applies at once
    }

    /// <summary>A round at 10 000 data pages/s (0.1 ms a page) over a 40 MB/s link.</summary>
    private static RoundOutcome Round(int round, long remaining, long previous, double dirty, bool canSlow = false) =>
        new(round, remaining, previous, DataPagesPerSecond: 10_000, DirtyPagesPerSecond: dirty, BytesPerSecond: 40e6,
            TimeSpan.FromSeconds(1), FixedCostMs: 20)
        {
            Parameters = MigrationOptions.Defaults.Parameters with { Converge = ConvergeMethod.None },
            CanSlowGuest = canSlow,
        };

    [Fact]
    public void Prediction_CountsTheRoundsLeft_WhenTheGuestDirtiesLessThanTheLinkMoves()
    {
        // 20 000 pages left, 2800 fit 300 ms (less the 20 ms fixed cost); each round leaves half: 3 rounds
        var prediction = ConvergencePrediction.Of(Round(1, 20_000, 40_000, dirty: 5000), 300, 300, false, 0);
        Assert.True(prediction.Finishes);
        Assert.Equal(3, prediction.RoundsLeft);
        Assert.Equal(2 + 1 + 0.5, prediction.SecondsLeft!.Value, 6);
        Assert.Contains("about 3 more rounds", prediction.Text, StringComparison.Ordinal);
    }

    [Fact]
    public void Prediction_SaysWhatWouldLetAHopelessMigrationFinish()
    {
        var prediction = ConvergencePrediction.Of(Round(2, 20_000, 20_000, dirty: 12_000), 300, 300, false, 0);
        Assert.False(prediction.Finishes);
        Assert.Contains("cannot finish", prediction.Text, StringComparison.Ordinal);
        Assert.Contains("a bandwidth of at least 96 MB/s", prediction.Text, StringComparison.Ordinal); // 2 x dirty
        Assert.Contains("a throttle of 58%", prediction.Text, StringComparison.Ordinal); // 1 - 5000/12000
        Assert.Contains("a downtime limit of 2020 ms", prediction.Text, StringComparison.Ordinal);

        var slowing = ConvergencePrediction.Of(Round(2, 20_000, 20_000, dirty: 12_000), 300, 300, true, 0.2);
        Assert.True(slowing.Finishes);
        Assert.Contains("slowing the guest", slowing.Text, StringComparison.Ordinal);

        var ramp = ConvergencePrediction.Of(Round(2, 20_000, 20_000, dirty: 12_000), 300, 2500, false, 0);
        Assert.True(ramp.Finishes); // the ramp will reach the 2020 ms the whole remainder needs
    }

    [Fact]
    public void AHopelessMigration_GivesUpWithinFiveRounds_SayingWhatWouldHelp()
    {
        var policy = new ConvergencePolicy(TimeSpan.FromMilliseconds(300), maxRounds: 30, TimeSpan.FromMinutes(5));
        var decisions = Enumerable.Range(0, 5)
            .Select(r => policy.Decide(Round(r, 20_000, r == 0 ? 40_000 : 20_000, dirty: 12_000)))
            .ToList();
        int gaveUp = decisions.FindIndex(d => d is ConvergenceDecision.NotConverging);
        Assert.Equal(3, gaveUp); // rounds 2 and 3 said so: four rounds in all
        var reason = ((ConvergenceDecision.NotConverging)decisions[gaveUp]).Reason;
        Assert.StartsWith("did not converge: after 4 rounds", reason, StringComparison.Ordinal);
        Assert.Contains("it would with a bandwidth", reason, StringComparison.Ordinal);

        // the same guest with a method that can still slow it goes on
        var slowing = new ConvergencePolicy(TimeSpan.FromMilliseconds(300), maxRounds: 30, TimeSpan.FromMinutes(5));
        Assert.All(Enumerable.Range(0, 10), r => Assert.IsType<ConvergenceDecision.ContinueRounds>(
            slowing.Decide(Round(r, 20_000, 20_000, dirty: 12_000, canSlow: true))));
    }

    /// <summary>
    /// A guest whose dirty rate rises as rounds get shorter: each round's estimate says a few more rounds, and the
    /// remainder shrinks, but the rounds left never fall. The trend gives it away two rounds after it starts.
    /// </summary>
    [Fact]
    public void AnEstimateThatNeverComesCloser_IsHopeless()
    {
        var policy = new ConvergencePolicy(TimeSpan.FromMilliseconds(300), maxRounds: 60, TimeSpan.FromMinutes(5));
        // the remainder falls by a fifth to a third a round while the dirty rate climbs toward the link's
        (long Remaining, double Dirty)[] rounds =
            [(72_000, 5100), (50_000, 5700), (38_000, 6100), (31_000, 6300), (26_000, 6500), (22_000, 6800)];
        var decisions = new List<ConvergenceDecision>();
        long previous = 134_000;
        for (int r = 0; r < rounds.Length && decisions.LastOrDefault() is not ConvergenceDecision.NotConverging; r++)
        {
            decisions.Add(policy.Decide(new RoundOutcome(r, rounds[r].Remaining, previous, DataPagesPerSecond: 7500,
                DirtyPagesPerSecond: rounds[r].Dirty, BytesPerSecond: 31e6, TimeSpan.FromSeconds(r), FixedCostMs: 50)
            {
                Parameters = MigrationOptions.Defaults.Parameters with { Converge = ConvergeMethod.None },
            }));
            previous = rounds[r].Remaining;
        }

        var gaveUp = Assert.IsType<ConvergenceDecision.NotConverging>(decisions[^1]);
        Assert.InRange(decisions.Count, 4, 5);
        Assert.Contains("the rounds left have not fallen", gaveUp.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void TheDowntimeRamp_RisesEachRoundToTheLimit()
    {
        var p = Auto with
        {
            DowntimeLimit = TimeSpan.FromMilliseconds(300),
            DowntimeRamp = DowntimeRamp.Parse("50:100"),
        };
        Assert.Equal([50d, 150, 250, 300, 300],
            Enumerable.Range(0, 5).Select(r => p.DowntimeLimitAt(r).TotalMilliseconds));
        Assert.Throws<ArgumentException>(() => DowntimeRamp.Parse("50"));
        Assert.Throws<ArgumentException>(() => DowntimeRamp.Parse("0:10"));
        Assert.Throws<ArgumentException>(() => DowntimeRamp.Parse("50:-1"));
    }

    [Fact]
    public void ALiveChangeOutOfRange_IsRefused_AndChangesNothing()
    {
        var live = new LiveParameters(Auto);
        var error = Assert.Throws<ArgumentException>(() => live.Change(p => p with
        {
            Throttle = p.Throttle with { Max = 1.5 },
        }));
        Assert.Contains("--throttle", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => live.Change(p => p with { DowntimeLimit = TimeSpan.Zero }));
        Assert.Throws<ArgumentException>(() => live.Change(p => p with { MaxBandwidthBytesPerSecond = -1 }));
        Assert.Same(Auto, live.Current);
        Assert.Equal(0, live.Changes);

        live.Change(p => p with { MaxRounds = 7 });
        Assert.Equal((7, 1), (live.Current.MaxRounds, live.Changes));
    }

    [Fact]
    public void TheDeltaCache_IsResizedLive_OnlyForAMigrationThatStartedWithDeltas()
    {
        var resize = new SetMigrationParametersRequest { DeltaCacheBytes = 32 << 20 };
        var withoutDeltas = new LiveParameters(Auto);
        var refused = Assert.Throws<InvalidOperationException>(() =>
            withoutDeltas.Change(p => OutgoingMigrations.Changed(p, resize), OptionNames.Fields));
        Assert.Contains("delta pages are off", refused.Message, StringComparison.Ordinal);
        Assert.Equal(0, withoutDeltas.Changes);

        var withDeltas = new LiveParameters((MigrationOptions.Defaults with { DeltaCacheBytes = 8 << 20 }).Parameters);
        Assert.Equal(8 << 20, withDeltas.Current.DeltaCacheBytes);
        var tooLarge = Assert.Throws<ArgumentException>(() => withDeltas.Change(
            p => OutgoingMigrations.Changed(p, new SetMigrationParametersRequest { DeltaCacheBytes = 1UL << 41 }),
            OptionNames.Fields));
        Assert.Contains("delta_cache_bytes", tooLarge.Message, StringComparison.Ordinal);
        withDeltas.Change(p => OutgoingMigrations.Changed(p, resize), OptionNames.Fields);
        withDeltas.Change(p => OutgoingMigrations.Changed(p, new SetMigrationParametersRequest { DeltaCacheBytes = 0 }),
            OptionNames.Fields);
        Assert.Equal((0L, 2), (withDeltas.Current.DeltaCacheBytes, withDeltas.Changes));
    }
}
