using System.Globalization;
using System.Security.Cryptography;

namespace Migration.Bench;

/// <summary>One guest of the downtime check: <c>migrate</c> flags, its RAM and the link it crosses.</summary>
internal sealed record DowntimeGuest(string Name, string Description, long RamBytes, IReadOnlyList<string> Args,
    BenchLink Link);

/// <summary>
/// <c>--only downtime</c>: does the downtime limit (300 ms, the bench's) hold? Each guest migrates with the machine
/// quiet and with it busy (a spinning thread per core in this process, at normal priority, for the whole run), the two
/// interleaved in each repeat. Every run prints the limit, the estimate precopy stopped on and the downtime taken, by
/// phase, and the part ends with how many runs kept the limit.
/// </summary>
internal sealed partial class BenchRunner
{
    public const double DowntimeLimitMs = 300;

    public static IReadOnlyList<DowntimeGuest> DowntimeGuests(bool quick)
    {
        long busyRam = quick ? 1L << 30 : 2L << 30;
        return
        [
            new("ab-256m", "QEMU's A-B guest: 64 MiB incremented a byte per page in order, uncapped", 256L << 20,
                ["--workload", "ab", "--ab-mib", "64"], BenchScenario.Uncapped),
            new($"busy-{busyRam >> 30}g-1gbit", "busy guest writing 100 MiB/s over a 1 Gbit/s link", busyRam,
                ["--workload", "busy", "--busy-dirty-rate", "100MiB/s"], new BenchLink("1gbit", "1Gbit")),
            new("demo-1g", "the demo's guest: memhog filled and freed 90% of RAM, then idles", 1L << 30,
                ["--workload", "memhog"], BenchScenario.Uncapped),
        ];
    }

    private async Task RunDowntimeAsync(CancellationToken ct)
    {
        for (int repeat = 1; repeat <= options.Repeat; repeat++)
        {
            foreach (var guest in DowntimeGuests(options.Quick))
            {
                // quiet first in odd repeats, busy first in even ones
                foreach (bool busy in repeat % 2 == 1 ? new[] { false, true } : [true, false])
                {
                    using var load = busy ? CpuLoad.Start(Environment.ProcessorCount) : null;
                    var run = await RunMigrationAsync($"downtime-{guest.Name}-{(busy ? "busy" : "quiet")}",
                        guest.RamBytes, guest.Args, guest.Link, hints: true, repeat, channels: 2, ct);
                    _results.Downtime.Add(run);
                    Save();
                    output.WriteLine("     " + DescribeDowntime(run));
                }
            }
        }

        int held = _results.Downtime.Count(r => r.Ok && r.Source!.Timing.DowntimeMs <= DowntimeLimitMs);
        int completed = _results.Downtime.Count(r => r.Ok);
        output.WriteLine($"bench: downtime limit {DowntimeLimitMs:F0} ms held in {held} of {completed} completed " +
            $"migrations ({_results.Downtime.Count - completed} did not complete)");
    }

    /// <summary>The limit, the estimate by phase and the downtime by phase, for one run.</summary>
    public static string DescribeDowntime(BenchRun run)
    {
        if (!run.Ok || run.Source is not { } r)
        {
            return $"did not complete: {run.Error}";
        }

        var t = r.Timing;
        var inv = CultureInfo.InvariantCulture;
        string Phases(Dictionary<string, double> phases) =>
            string.Join(", ", phases.Select(p => string.Create(inv, $"{p.Key} {p.Value:F0}")));
        string verdict = t.DowntimeMs <= DowntimeLimitMs ? "held" : "EXCEEDED";
        return string.Create(inv,
            $"limit {DowntimeLimitMs:F0} ms, expected {t.ExpectedDowntimeMs:F0} " +
            $"({Phases(t.ExpectedDowntimePhasesMs)}), took {t.DowntimeMs:F0} ({Phases(t.DowntimePhasesMs)}): {verdict}");
    }

    /// <summary>Threads that keep the cores busy until disposed: the "machine busy" of the downtime check.</summary>
    private sealed class CpuLoad : IDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Thread[] _threads;

        private CpuLoad(int threads)
        {
            _threads = [.. Enumerable.Range(0, threads).Select(i => new Thread(Spin)
            {
                IsBackground = true,
                Name = $"cpu-load-{i}",
            })];
            foreach (var thread in _threads)
            {
                thread.Start();
            }
        }

        public static CpuLoad Start(int threads) => new(threads);

        public void Dispose()
        {
            _stop.Cancel();
            foreach (var thread in _threads)
            {
                thread.Join();
            }

            _stop.Dispose();
        }

        private void Spin()
        {
            byte[] block = new byte[64 << 10]; // hashing a cache-sized block: the CPU and its caches, not memory
            while (!_stop.IsCancellationRequested)
            {
                _ = SHA256.HashData(block);
            }
        }
    }
}
