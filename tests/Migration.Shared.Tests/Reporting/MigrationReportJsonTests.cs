using System.Text.Json.Nodes;
using Migration.Shared.Balloon;
using Migration.Shared.Devices;
using Migration.Shared.Reporting;

namespace Migration.Shared.Tests.Reporting;

/// <summary>
/// The report is the contract for scripts: the devices' statistics records are its sections, serialised as the
/// devices keep them, under the names and in the order the report has always had.
/// </summary>
public sealed class MigrationReportJsonTests
{
    private static readonly HintStats Hints = new()
    {
        WaitOnAck = true,
        CommandIdsIssued = 2,
        BlocksReceived = 3,
        BlocksApplied = 4,
        BlocksDroppedStale = 5,
        PagesCleared = 6,
        DeviceErrors = 7,
        DeviceError = "hint error",
    };

    private static readonly BalloonMigrationStats Balloon = new()
    {
        SkipsBallooned = true,
        Encoding = "Chunks",
        Features = "0x2a",
        TargetPages = 14,
        ActualPages = 15,
        HeldPages = 16,
        PagesSkipped = 17,
        InflatedDuringMigration = 18,
        DeflatedDuringMigration = 19,
        GuestEvents = 20,
        DeviceErrors = 21,
        DeviceError = "balloon error",
    };

    private static readonly PageReportingMigrationStats Reporting = new()
    {
        SkipsDiscarded = true,
        PagesSkipped = 22,
        PagesDiscardedDuringMigration = 23,
        Reports = 24,
        PagesDiscarded = 25,
        PagesKeptPoisoned = 26,
        DiscardMapPages = 27,
    };

    [Fact]
    public void TheDeviceSections_KeepTheReportsNamesAndOrder()
    {
        var report = new MigrationReport();
        report.Add([Balloon, Reporting]);
        report.Add([Hints]);

        var json = JsonNode.Parse(report.ToJson())!.AsObject();
        Assert.Equal(
            "{'bytesOnWire':0,'pagesNormal':0,'pagesZero':0,'pagesCompressed':0,'pagesDelta':0," +
            "'pagesSkippedByHints':6,'pagesSkippedAsBallooned':17,'pagesSkippedAsDiscarded':22,'throughputMBps':0}",
            Section(json, "transfer"));
        Assert.Equal(
            "{'waitOnAck':true,'cmdIds':2,'blocksReceived':3,'blocksApplied':4,'blocksDroppedStale':5," +
            "'pagesCleared':6,'deviceErrors':7,'deviceError':'hint error'}",
            Section(json, "hints"));
        Assert.Equal(
            "{'skipsBallooned':true,'encoding':'Chunks','features':'0x2a','targetPages':14,'actualPages':15," +
            "'heldPages':16,'pagesSkipped':17,'inflatedDuringMigration':18,'deflatedDuringMigration':19," +
            "'guestEvents':20,'deviceErrors':21,'deviceError':'balloon error'}",
            Section(json, "balloon"));
        Assert.Equal(
            "{'skipsDiscarded':true,'pagesSkipped':22,'pagesDiscardedDuringMigration':23,'reports':24," +
            "'pagesDiscarded':25,'pagesKeptPoisoned':26,'discardMapPages':27}",
            Section(json, "reporting"));
        Assert.Equal(["verification", "hints", "balloon", "reporting"],
            json.Select(p => p.Key).SkipWhile(k => k != "verification"));
    }

    [Fact]
    public void DeltaPages_AreCountedInTransfer_WithTheCachesSectionLast()
    {
        var report = new MigrationReport();
        report.Transfer.PagesDelta = 5;
        report.Transfer.Delta = new MigrationReport.DeltaSection
        {
            CacheBytes = 64L << 20,
            Hits = 5,
            Misses = 6,
            Overflows = 7,
            BytesSaved = 8,
        };

        var json = JsonNode.Parse(report.ToJson())!.AsObject();
        Assert.Equal(
            "{'bytesOnWire':0,'pagesNormal':0,'pagesZero':0,'pagesCompressed':0,'pagesDelta':5," +
            "'pagesSkippedByHints':0,'pagesSkippedAsBallooned':0,'pagesSkippedAsDiscarded':0,'throughputMBps':0," +
            "'delta':{'cacheBytes':67108864,'hits':5,'misses':6,'overflows':7,'bytesSaved':8}}",
            Section(json, "transfer"));
        Assert.Equal(report.ToJson(), MigrationReport.FromJson(report.ToJson()).ToJson());
    }

    [Fact]
    public void AReportReadBack_HasTheSameSections()
    {
        var report = new MigrationReport();
        report.Add([Hints, Balloon, Reporting]);

        var read = MigrationReport.FromJson(report.ToJson());
        Assert.Equal((Hints, Balloon, Reporting), (read.Hints, read.Balloon, read.Reporting));
        Assert.Equal(report.ToJson(), read.ToJson());
    }

    [Fact]
    public void WithoutTheirDevices_TheSectionsAreLeftOut()
    {
        var json = JsonNode.Parse(new MigrationReport().ToJson())!.AsObject();

        Assert.False(json.ContainsKey("hints") || json.ContainsKey("balloon") || json.ContainsKey("reporting"));
    }

    [Fact]
    public void ARecordTheReportHasNoSectionFor_IsRefused() =>
        Assert.Throws<ArgumentException>(() => new MigrationReport().Add([new UnknownStats()]));

    /// <summary>A section as compact JSON, with single quotes so the expected text reads without escapes.</summary>
    private static string Section(JsonObject report, string name) => report[name]!.ToJsonString().Replace('"', '\'');

    private sealed record UnknownStats : IMigrationStats;
}
