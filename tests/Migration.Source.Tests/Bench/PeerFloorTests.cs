using System.Text.Json;
using Migration.Bench;
using Migration.Bench.Floor;
using Migration.Bench.Peers;
using Migration.Shared.Reporting;

namespace Migration.Source.Tests.Bench;

/// <summary>
/// <c>--peer qemu</c>'s random RAM with the .NET socket floor as a third engine: its rows, the ratios of ours to QEMU
/// and to the floor, the table, the chart's bars, the run order and <c>--render</c>, without running anything.
/// </summary>
public sealed class PeerFloorTests
{
    [Fact]
    public void Rows_PutTheFloorAfterQemuAndOurs_WithItsOwnRateAndCpuPerSide()
    {
        var rows = PeerRow.Of(Sitting());

        Assert.Equal(
            [(PeerRun.Qemu, "random-2ch"), (PeerRun.Ours, "random-2ch"), (PeerRun.Floor, "random-2ch"),
                (PeerRun.Qemu, "idle"), (PeerRun.Ours, "idle")],
            rows.Select(r => (r.Engine, r.Work)));
        var floor = rows.Single(r => r.Engine == PeerRun.Floor);
        Assert.Equal(3, floor.Runs);
        Assert.Equal(1, floor.Failed); // the failed run moves no median
        Assert.Equal(new Spread(4.0, 5.0, 8.0), floor.GBps); // 2 GB over 0.5, 0.4 and 0.25 s
        Assert.Equal(400, floor.TotalMs!.Median, 6);
        Assert.Equal(0.25, floor.SourceCpuPerGB!.Median, 6); // the sender's 0.5 s over 2 GB
        Assert.Equal(0.5, floor.TargetCpuPerGB!.Median, 6); // the receiver's 1 s over 2 GB
        Assert.Null(floor.DowntimeMs);
        Assert.Null(floor.GuestStoppedMs);
    }

    [Fact]
    public void RandomRows_SetOursAgainstQemuAndAgainstTheFloor_PerSide()
    {
        var row = Assert.Single(PeerRandomRow.Of(PeerRow.Of(Sitting())));
        Assert.Equal(2, row.Channels);
        Assert.Equal(0.5, row.OursToQemu!.Throughput!.Value, 6); // 0.5 GB/s against 1
        Assert.Equal(4.0, row.OursToQemu.SourceCpuPerGB!.Value, 6); // 2 s/GB against 0.5
        Assert.Equal(6.0, row.OursToQemu.TargetCpuPerGB!.Value, 6); // 1.5 s/GB against 0.25
        Assert.Equal(0.1, row.OursToFloor!.Throughput!.Value, 6); // 0.5 GB/s against 5
        Assert.Equal(8.0, row.OursToFloor.SourceCpuPerGB!.Value, 6); // 2 s/GB against the sender's 0.25
        Assert.Equal(3.0, row.OursToFloor.TargetCpuPerGB!.Value, 6); // 1.5 s/GB against the receiver's 0.5
        Assert.Null(row.OursToFloor.GuestStopped);

        // The ratios against QEMU on other work are as before: the floor only ever meets random RAM.
        Assert.Equal(["random-2ch", "idle"], PeerRatio.Of(PeerRow.Of(Sitting())).Select(r => r.Work));
        Assert.Equal(["random-2ch"], PeerRatio.Of(PeerRow.Of(Sitting()), PeerRun.Floor).Select(r => r.Work));
    }

    [Fact]
    public void RandomRows_WithoutQemu_StillSetOursAgainstTheFloor()
    {
        var peer = Sitting();
        peer.Runs.RemoveAll(r => r.Engine == PeerRun.Qemu);
        peer.Floor.Add(Floor(channels: 1, repeat: 1, seconds: 1));
        var rows = PeerRandomRow.Of(PeerRow.Of(peer));
        Assert.Equal([1, 2], rows.Select(r => r.Channels));
        Assert.Null(rows[0].Ours);
        Assert.Null(rows[0].OursToFloor);
        Assert.Null(rows[1].OursToQemu);
        Assert.Equal(0.1, rows[1].OursToFloor!.Throughput!.Value, 6);

        // peer.png: QEMU's slot stays empty, ours and the floor keep theirs, each channel count four slots on.
        Assert.Equal(
            [(PeerRun.Floor, 2, 2.0), (PeerRun.Ours, 5, 0.5), (PeerRun.Floor, 6, 5.0)],
            BenchCharts.PeerBars(rows).Select(b => (b.Engine, b.Position, b.GBps.Median)));
    }

    [Fact]
    public void Markdown_ShowsTheThreeEnginesAndBothRatios_AndTheFloorsFailure()
    {
        var results = new BenchResults { Quick = true, Repeat = 3, Peer = Sitting() };
        var summary = BenchSummary.Build(results, []);
        string md = BenchMarkdown.Write(results, summary, []);

        Assert.Contains("| 2 channels | 1.00 | 0.50 | 5.00 | **0.50** | **0.10** | 0.50 + 0.25 | 2.00 + 1.50 | " +
            "0.25 + 0.50 | 4.00 | 6.00 | 8.00 | 3.00 |", md, StringComparison.Ordinal);
        Assert.Contains("| random-2ch | floor | 3 (1 failed) | 4.00 / 5.00 / 8.00 | 250 / 400 / 500 |", md,
            StringComparison.Ordinal);
        Assert.Contains("- floor random-2ch #4: receiver: reset (log: runs/09-peer-floor-2ch-4.log)", md,
            StringComparison.Ordinal);
        Assert.Contains("odd repeats run QEMU, ours, the floor", md, StringComparison.Ordinal);
        Assert.DoesNotContain("Stale (free memory", md, StringComparison.Ordinal); // no stale part ran
        Assert.Contains("--repeat 3 --peer qemu`", md, StringComparison.Ordinal);

        // Without floor runs (a results.json from before) the text about it and its table cells stay out.
        results.Peer!.Floor.Clear();
        string before = BenchMarkdown.Write(results, BenchSummary.Build(results, []), []);
        Assert.DoesNotContain("odd repeats run QEMU", before, StringComparison.Ordinal);
        Assert.Contains("| 2 channels | 1.00 | 0.50 | n/a | **0.50** | **n/a** |", before, StringComparison.Ordinal);
    }

    [Fact]
    public void RandomOrder_ReversesByRepeat_SoOursSitsBetweenTheOtherTwo()
    {
        Assert.Equal([PeerRun.Qemu, PeerRun.Ours, PeerRun.Floor], BenchRunner.RandomOrder(qemuFirst: true));
        Assert.Equal([PeerRun.Floor, PeerRun.Ours, PeerRun.Qemu], BenchRunner.RandomOrder(qemuFirst: false));
    }

    [Theory]
    [InlineData("random-4ch", 4)]
    [InlineData("random-ch", null)]
    [InlineData("random-0ch", null)]
    [InlineData("idle", null)]
    public void RandomWork_NamesItsChannelCount(string work, int? channels)
    {
        Assert.Equal(channels, PeerRun.RandomChannels(work));
        if (channels is int n)
        {
            Assert.Equal(work, PeerRun.RandomWork(n));
        }
    }

    [Fact]
    public async Task Render_RedrawsTheFloorFromResultsJson_AndCountsItsFailure()
    {
        string dir = Directory.CreateTempSubdirectory("peer-floor-render-").FullName;
        try
        {
            var results = new BenchResults { Quick = true, Repeat = 3, Peer = Sitting() };
            await File.WriteAllTextAsync(Path.Combine(dir, "results.json"),
                JsonSerializer.Serialize(results, MigrationReport.JsonOptions));

            int exit = await BenchRunner.RenderAsync(dir, TextWriter.Null, CancellationToken.None);

            Assert.Equal(1, exit); // the failed floor run counts as a failed run
            string md = await File.ReadAllTextAsync(Path.Combine(dir, "results.md"));
            Assert.Contains("| **0.50** | **0.10** |", md, StringComparison.Ordinal);
            Assert.True(new FileInfo(Path.Combine(dir, "peer.png")).Length > 0);
            var again = JsonSerializer.Deserialize<BenchResults>(
                await File.ReadAllTextAsync(Path.Combine(dir, "results.json")), MigrationReport.JsonOptions)!;
            Assert.Equal(4, again.Peer!.Floor.Count);
            Assert.Equal(PeerRow.Of(results.Peer!), PeerRow.Of(again.Peer));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// Random RAM at 2 channels: QEMU at 1 GB/s (0.5 + 0.25 s/GB), ours at 0.5 GB/s median (2 + 1.5 s/GB) and the
    /// floor at 5 GB/s median (0.25 + 0.5 s/GB) with one failed run; and an idle row each for QEMU and ours.
    /// </summary>
    private static PeerResults Sitting()
    {
        var peer = new PeerResults { QemuVersion = "QEMU emulator version 7.2.22", RamBytes = 1L << 30 };
        foreach (int repeat in new[] { 1, 2, 3 })
        {
            peer.Runs.Add(Run(PeerRun.Qemu, "random-2ch", repeat, totalMs: 1000, 0.5, 0.25));
            peer.Runs.Add(Run(PeerRun.Ours, "random-2ch", repeat, totalMs: 1000 << (repeat - 1), 2, 1.5));
            peer.Floor.Add(Floor(channels: 2, repeat, seconds: repeat switch { 1 => 0.4, 2 => 0.25, _ => 0.5 }));
        }

        var failed = Floor(channels: 2, repeat: 4, seconds: 0.01);
        failed.Receiver = failed.Receiver! with { Error = "reset" };
        failed.Log = "runs/09-peer-floor-2ch-4.log";
        failed.Judge();
        peer.Floor.Add(failed);
        peer.Runs.Add(Run(PeerRun.Ours, "idle", 1, totalMs: 3000, 1, 1));
        peer.Runs.Add(Run(PeerRun.Qemu, "idle", 1, totalMs: 1000, 1, 1));
        return peer;
    }

    private static PeerRun Run(string engine, string work, int repeat, double totalMs, double sourceCpu,
        double targetCpu) => new()
        {
            Engine = engine,
            Work = work,
            Channels = PeerRun.RandomChannels(work) ?? 1,
            Repeat = repeat,
            TotalMs = totalMs,
            DowntimeMs = 50,
            BytesOnWire = 1_000_000_000,
            SourceCpuSeconds = sourceCpu,
            TargetCpuSeconds = targetCpu,
            Verified = true,
        };

    private static FloorRun Floor(int channels, int repeat, double seconds)
    {
        var run = new FloorRun
        {
            Channels = channels,
            Repeat = repeat,
            Sender = new FloorSide(FloorSide.SenderRole, channels, 2_000_000_000, seconds, 0.5, "d", null),
            Receiver = new FloorSide(FloorSide.ReceiverRole, channels, 2_000_000_000, seconds, 1.0, "d", null),
        };
        run.Judge();
        return run;
    }
}
