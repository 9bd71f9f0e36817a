using Migration.Bench;
using Migration.Bench.Floor;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;

namespace Migration.Source.Tests.Bench;

/// <summary>The floor's result lines, its option, its split of RAM into channels and its table, without sockets.</summary>
public sealed class FloorTests
{
    [Fact]
    public void AResultLine_RoundTrips_AndOtherLinesAreNotResults()
    {
        var side = new FloorSide(FloorSide.SenderRole, 2, 1L << 30, 0.5, 0.25, "00000000deadbeef", null);
        Assert.Equal(side, FloorSide.Parse(side.ToLine()));
        Assert.DoesNotContain('\n', side.ToLine());
        Assert.Null(FloorSide.Parse("floor: listening on port 5000"));
        Assert.Null(FloorSide.Parse(FloorSide.ResultPrefix + "{not json"));
        Assert.Equal(5000, FloorSide.ParsePort(FloorSide.ListeningPrefix + "5000"));
        Assert.Null(FloorSide.ParsePort(FloorSide.ListeningPrefix + "70000"));
        Assert.Null(FloorSide.ParsePort(side.ToLine()));
    }

    [Theory]
    [InlineData(null, null, null)]
    [InlineData("2GiB", 2L << 30, null)]
    [InlineData("16MiB", 16L << 20, null)]
    [InlineData("8MiB", null, "from 16MiB to 1TiB")]
    [InlineData("1000000000", null, "whole number of 4 KiB pages")]
    [InlineData("lots", null, "--floor-ram")]
    public void FloorRam_TakesWholePagesInRange(string? text, long? bytes, string? error)
    {
        var (parsed, problem) = FloorCommands.ParseRam(text);
        Assert.Equal(bytes, parsed);
        if (error is null)
        {
            Assert.Null(problem);
        }
        else
        {
            Assert.Contains(error, problem, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData(262_144, 1)]
    [InlineData(262_144, 4)]
    [InlineData(1_001, 4)]
    [InlineData(3, 4)]
    public void Channels_SplitRam_IntoAdjacentRangesCoveringEveryPage(long pages, int channels)
    {
        long next = 0;
        for (int i = 0; i < channels; i++)
        {
            var (first, count) = FloorProgram.Range(pages, channels, i);
            Assert.Equal(next, first);
            Assert.True(count >= 0);
            next = first + count;
        }

        Assert.Equal(pages, next);
    }

    [Fact]
    public void Judge_NamesWhatDiffers_AndOnlyEqualRamCounts()
    {
        FloorRun Run(string? sent, string? received, long receivedBytes = 1000) => new()
        {
            Channels = 1,
            Repeat = 1,
            Sender = new FloorSide(FloorSide.SenderRole, 1, 1000, 1, 1, sent, null),
            Receiver = new FloorSide(FloorSide.ReceiverRole, 1, receivedBytes, 1, 1, received, null),
        };

        var equal = Run("aa", "aa");
        equal.Judge();
        Assert.True(equal.Ok);

        var differs = Run("aa", "bb");
        differs.Judge();
        Assert.False(differs.Ok);
        Assert.Contains("RAM differs", differs.Error, StringComparison.Ordinal);

        var shorter = Run("aa", "aa", receivedBytes: 999);
        shorter.Judge();
        Assert.Contains("received 999", shorter.Error, StringComparison.Ordinal);

        var silent = new FloorRun { Channels = 1, Repeat = 1 };
        silent.Judge();
        Assert.Equal("the sender printed no result", silent.Error);
    }

    [Fact]
    public void Rows_PutTheStreamBesideTheFloor_PerChannelCount_AsRatios()
    {
        var floor = new FloorResults { RamBytes = 1L << 30 };
        foreach (var (repeat, seconds) in new[] { (1, 0.5), (2, 0.25), (3, 1.0) })
        {
            floor.Runs.Add(new FloorRun
            {
                Channels = 2,
                Repeat = repeat,
                Sender = new FloorSide(FloorSide.SenderRole, 2, 2_000_000_000, seconds, 1.0, "d", null),
                Receiver = new FloorSide(FloorSide.ReceiverRole, 2, 2_000_000_000, seconds, 2.0, "d", null),
            });
            floor.Stream.Add(Stream(2, repeat, roundZeroMs: 2000 * seconds));
        }

        floor.Runs.Add(new FloorRun { Channels = 2, Repeat = 4, Error = "boom" }); // must not move any median
        var row = Assert.Single(FloorRow.Of(floor));
        Assert.Equal(2, row.Channels);
        Assert.Equal(4, row.FloorRuns);
        Assert.Equal(1, row.FloorFailed);
        Assert.Equal(4.0, row.FloorGBps!.Median, 6); // 2 GB in 0.5 s
        Assert.Equal(0.5, row.SenderCpuPerGB!.Value, 6);
        Assert.Equal(1.0, row.ReceiverCpuPerGB!.Value, 6);
        Assert.Equal(1.0, row.StreamGBps!.Median, 6); // 1 GB in round 0 of 1 s
        Assert.Equal(0.25, row.Throughput!.Value, 6);
        Assert.Equal(3.0, row.SourceCpuPerGB!.Value, 6); // 3 s over 1 GB on the wire
        Assert.Equal(6.0, row.SourceCpuRatio!.Value, 6);
        Assert.Equal(1.0, row.TargetCpuRatio!.Value, 6);

        var results = new BenchResults { Floor = floor, Iperf3 = { new Iperf3Result(24e9, null, "3.12", 3) } };
        string md = FloorMarkdown.Write(results);
        Assert.Contains("| 2 | 2.00 / 4.00 / 8.00 (1 failed) | 0.50 + 1.00 | 0.50 / 1.00 / 2.00 | 3.00 + 1.00 | " +
            "**0.25** | 6.00 | 1.00 |", md, StringComparison.Ordinal);
        Assert.Contains("3.00 GB/s", md, StringComparison.Ordinal);
        Assert.Equal(string.Empty, FloorMarkdown.Write(new BenchResults()));
    }

    [Theory]
    [InlineData("floor-stream-4ch", 4)]
    [InlineData("floor-stream-ch", null)]
    [InlineData("raw-stream-2ch", null)]
    [InlineData("floor-stream--1ch", null)]
    public void StreamScenario_NamesItsChannelCount(string scenario, int? channels)
    {
        Assert.Equal(channels, FloorRow.ChannelsOf(scenario));
        if (channels is int n)
        {
            Assert.Equal(scenario, FloorResults.StreamScenario(n));
        }
    }

    private static BenchRun Stream(int channels, int repeat, double roundZeroMs) => new()
    {
        Scenario = FloorResults.StreamScenario(channels),
        Link = BenchScenario.Uncapped.Name,
        Hints = false,
        Repeat = repeat,
        Source = new MigrationReport
        {
            Status = MigrationStatus.Completed,
            Verified = true,
            Transfer = { BytesOnWire = 1_000_000_000 },
            Rounds = { new MigrationReport.RoundSection { Round = 0, Bytes = 1_000_000_000, Ms = roundZeroMs } },
            Process = new ProcessStats { MigrationCpuSeconds = 3 },
        },
        TargetProcess = new ProcessStats { MigrationCpuSeconds = 1 },
    };
}
