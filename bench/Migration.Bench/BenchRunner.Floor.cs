using Migration.Bench.Floor;
using Migration.TestSupport;

namespace Migration.Bench;

/// <summary>
/// <c>--only floor</c>: what .NET moves over plain sockets (the floor), against the gRPC page stream at the same
/// channel counts, iperf3 before and after. Within each repeat the floor and the stream alternate at each channel
/// count (which goes first alternates by repeat), so drift on a shared machine hits both alike.
/// </summary>
internal sealed partial class BenchRunner
{
    /// <summary>Channel counts of the floor and the stream beside it.</summary>
    public static readonly int[] FloorChannels = [1, 2, 4];

    private static readonly TimeSpan FloorTimeout = TimeSpan.FromMinutes(3);

    private async Task RunFloorAsync(CancellationToken ct)
    {
        long ram = options.FloorRamBytes ?? FloorResults.DefaultRamBytes(options.Quick);
        var floor = _results.Floor = new FloorResults { RamBytes = ram };
        int seconds = options.Quick ? 3 : 5;
        _results.Iperf3.Add(await Iperf3.RunAsync(seconds, output, ct));
        string[] randomArgs = ["--workload", "memhog", "--memhog-share", "0.9", "--idle-dirty-pages", "0"];
        for (int repeat = 1; repeat <= options.Repeat; repeat++)
        {
            foreach (int channels in FloorChannels)
            {
                bool floorFirst = repeat % 2 == 1;
                foreach (bool floorTurn in new[] { floorFirst, !floorFirst })
                {
                    if (floorTurn)
                    {
                        floor.Runs.Add(await RunFloorOnceAsync(ram, channels, repeat, ct));
                    }
                    else
                    {
                        floor.Stream.Add(await RunMigrationAsync(FloorResults.StreamScenario(channels), ram,
                            randomArgs, BenchScenario.Uncapped, hints: false, repeat, channels, ct));
                    }

                    Save();
                }
            }
        }

        _results.Iperf3.Add(await Iperf3.RunAsync(seconds, output, ct));
        Save();
    }

    /// <summary>
    /// One transfer: a receiver process (this program's hidden <c>floor-receive</c>) and a sender process
    /// (<c>floor-send</c>), each printing its own figures; both logs go to one file, named after
    /// <paramref name="name"/> (the part it runs in).
    /// </summary>
    private async Task<FloorRun> RunFloorOnceAsync(long ram, int channels, int repeat, CancellationToken ct,
        string name = "floor")
    {
        string log = Path.Combine(options.OutDir, "runs", $"{++_runIndex:D2}-{name}-{channels}ch-{repeat}.log");
        var run = new FloorRun
        {
            Channels = channels,
            Repeat = repeat,
            Log = Path.GetRelativePath(options.OutDir, log),
        };
        string dll = typeof(BenchRunner).Assembly.Location;
        string size = $"{ram >> 20}MiB", count = $"{channels}", timeout = $"{(int)FloorTimeout.TotalSeconds}";
        await using var receiver = ChildProgram.Dotnet(dll,
            ["floor-receive", "--ram", size, "--channels", count, "--timeout-seconds", timeout]);
        ChildProgram? sender = null;
        try
        {
            await receiver.WaitForLineAsync(FloorSide.ListeningPrefix, TimeSpan.FromMinutes(1));
            int port = receiver.Output.Select(FloorSide.ParsePort).FirstOrDefault(p => p is not null)
                ?? throw new InvalidOperationException("the receiver printed no port");
            sender = ChildProgram.Dotnet(dll, ["floor-send", "--port", $"{port}", "--ram", size, "--channels", count,
                "--timeout-seconds", timeout]);
            await sender.WaitForExitAsync(FloorTimeout, ct);
            await receiver.WaitForExitAsync(TimeSpan.FromMinutes(1), ct);
            run.Sender = sender.Output.Select(FloorSide.Parse).LastOrDefault(s => s is not null);
            run.Receiver = receiver.Output.Select(FloorSide.Parse).LastOrDefault(s => s is not null);
        }
        catch (Exception ex) when (ex is TimeoutException or InvalidOperationException)
        {
            run.Error = ex.Message;
        }
        finally
        {
            await File.WriteAllLinesAsync(log,
                [
                    "# receiver", .. receiver.Output,
                    "# sender", .. sender?.Output ?? [],
                ], CancellationToken.None);
            if (sender is not null)
            {
                await sender.DisposeAsync();
            }
        }

        run.Judge();
        string label = $"{name} {channels}ch #{repeat}";
        output.WriteLine(run.Ok
            ? $"[{_runIndex,2}] {label,-38} {run.Sender!.Bytes / run.Sender.Seconds / 1e9,5:F2} " +
                $"GB/s  cpu {run.Sender.CpuSeconds,4:F2}+{run.Receiver!.CpuSeconds:F2} s  RAM equal " +
                $"({run.Sender.Digest})"
            : $"[{_runIndex,2}] {label} FAILED: {run.Error}");
        return run;
    }
}
