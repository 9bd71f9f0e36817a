using Migration.Shared.Precopy;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Precopy;

public sealed class RoundStatsTests
{
    [Fact]
    public void TheFirstRound_SetsTheRates_WhateverItsSize()
    {
        var stats = new RoundStats(0, 0);
        stats.RecordRound(pagesSent: 10, bytes: 40_960, dataPages: 10, seconds: 0.01);
        Assert.Equal(4_096_000, stats.BytesPerSecond, 3);
        Assert.Equal(1000, stats.DataPagesPerSecond, 3);
    }

    [Fact]
    public void RoundsOfFewerThan64Pages_DoNotMoveKnownRates()
    {
        var stats = new RoundStats(0, 0);
        stats.RecordRound(pagesSent: 1000, bytes: 4_096_000, dataPages: 1000, seconds: 1);
        stats.RecordRound(pagesSent: RoundStats.MinPagesForRate - 1, bytes: 100, dataPages: 63, seconds: 1);
        Assert.Equal(1000, stats.DataPagesPerSecond, 3);
        stats.RecordRound(pagesSent: RoundStats.MinPagesForRate, bytes: 4096 * 64, dataPages: 64, seconds: 1);
        Assert.Equal(64, stats.DataPagesPerSecond, 3);
    }

    [Fact]
    public void PagesStillInFlight_DoNotCountTowardTheRate()
    {
        // The round's last page went into the stream's windows at 1 s, but the target had taken only 600 of 1000:
        // the link delivered 600 pages a second, which is what the final send, ending at the target, will see.
        var stats = new RoundStats(0, 0);
        stats.RecordRound(pagesSent: 1000, bytes: 4_096_000, dataPages: 1000, seconds: 1, inFlightPages: 400);
        Assert.Equal(600, stats.DataPagesPerSecond, 3);
        Assert.Equal(4_096_000 * 0.6, stats.BytesPerSecond, 3);
    }

    [Fact]
    public void TheEstimate_TakesTheSlowerOfTheLastTwoRounds()
    {
        var stats = new RoundStats(0, 0);
        stats.RecordRound(pagesSent: 1000, bytes: 4_096_000, dataPages: 1000, seconds: 1);
        Assert.Equal(1000, stats.CautiousDataPagesPerSecond, 3);
        stats.RecordRound(pagesSent: 1000, bytes: 4_096_000, dataPages: 1000, seconds: 0.5);
        Assert.Equal(1000, stats.CautiousDataPagesPerSecond, 3);
        stats.RecordRound(pagesSent: 1000, bytes: 4_096_000, dataPages: 1000, seconds: 0.25);
        Assert.Equal(2000, stats.CautiousDataPagesPerSecond, 3);
    }

    [Fact]
    public void ARoundOfZeroPagesOnly_KeepsTheDataRate()
    {
        // Zero pages cost an index each; the pages left at the end are written ones, so they must not speed the
        // estimate.
        var stats = new RoundStats(0, 0);
        stats.RecordRound(pagesSent: 1000, bytes: 4_096_000, dataPages: 1000, seconds: 1);
        stats.RecordRound(pagesSent: 100_000, bytes: 800_000, dataPages: 0, seconds: 0.1);
        Assert.Equal(1000, stats.DataPagesPerSecond, 3);
        Assert.Equal(8_000_000, stats.BytesPerSecond, 3);
    }

    [Fact]
    public void TheDirtyRate_IsPagesNewlyLoggedBetweenSyncs()
    {
        var clock = new ManualTimeProvider();
        var stats = new RoundStats(pagesLogged: 100, clock.GetTimestamp());
        clock.Advance(TimeSpan.FromMilliseconds(500));
        stats.RecordSync(pagesLogged: 600, clock.GetTimestamp(), clock);
        Assert.Equal(1000, stats.DirtyPagesPerSecond, 3);
        clock.Advance(TimeSpan.FromSeconds(2));
        stats.RecordSync(pagesLogged: 600, clock.GetTimestamp(), clock);
        Assert.Equal(0, stats.DirtyPagesPerSecond, 3);
    }
}
