using System.Diagnostics;
using Migration.Bench.Peers;

namespace Migration.Bench;

internal sealed partial class BenchRunner
{
    /// <summary>The work both engines run, in the order of a sitting.</summary>
    private static readonly int[] PeerChannels = [1, 2, 4];

    /// <summary>
    /// <c>--peer qemu</c>: QEMU and ours on the same work, interleaved (which engine goes first alternates by
    /// repeat), iperf3 before and after: random RAM at 1, 2 and 4 channels (QEMU multifd beyond one) with the .NET
    /// socket floor (<see cref="RunFloorOnceAsync"/>) at the same size and channel count as a third engine (see
    /// <see cref="RandomOrder"/>), and an idle guest with 4.5% of its RAM in use (ours with hints off and on).
    /// QEMU's source RAM file is filled before its runs and deleted before the others, so no two hold their guests
    /// at once.
    /// </summary>
    private async Task RunPeersAsync(CancellationToken ct)
    {
        long ram = options.Quick ? 1L << 30 : 8L << 30;
        string work = Path.Combine(Path.GetFullPath(options.OutDir), "peer");
        Directory.CreateDirectory(work);
        var (qemu, reason) = await QemuPeer.FindAsync(work, output, ct, options.Qemu);
        var peer = _results.Peer = new PeerResults
        {
            QemuVersion = qemu?.Version,
            Unavailable = reason,
            RamBytes = ram,
        };
        if (reason is not null)
        {
            output.WriteLine($"bench: QEMU rows are n/a: {reason}");
        }

        int seconds = options.Quick ? 3 : 5;
        _results.Iperf3.Add(await Iperf3.RunAsync(seconds, output, ct));
        // RAM files where QEMU keeps guest memory: tmpfs when there is one, so neither side touches a disk.
        string ramDir = Directory.Exists("/dev/shm") ? "/dev/shm" : work;
        string sourceFile = Path.Combine(ramDir, $"qemu-src-{Environment.ProcessId}.ram");
        string blob = Path.Combine(work, "in-use.bin");
        string[] randomArgs = ["--workload", "memhog", "--memhog-share", "0.9", "--idle-dirty-pages", "0"];
        var idle = BenchScenario.All(options.Quick)[0];
        try
        {
            if (qemu is not null && options.RunsPeerPart("peer-idle"))
            {
                QemuPeer.FillRandom(blob, (long)(ram * 0.045));
            }

            for (int repeat = 1; repeat <= options.Repeat; repeat++)
            {
                bool qemuFirst = repeat % 2 == 1;
                foreach (int channels in options.RunsPeerPart("peer-random") ? PeerChannels : [])
                {
                    foreach (string engine in RandomOrder(qemuFirst))
                    {
                        string stem = Path.Combine(options.OutDir, "runs", $"peer-{channels}ch-{repeat}");
                        if (engine == PeerRun.Qemu && qemu is not null)
                        {
                            QemuPeer.FillRandom(sourceFile, ram);
                            peer.Runs.Add(await qemu.RandomRamAsync(sourceFile, ram, channels, repeat, stem, ct));
                            File.Delete(sourceFile);
                        }
                        else if (engine == PeerRun.Ours)
                        {
                            var run = await RunMigrationAsync($"peer-random-{channels}ch", ram, randomArgs,
                                BenchScenario.Uncapped, hints: false, repeat, channels, ct);
                            peer.Runs.Add(Ours(run, PeerRun.RandomWork(channels), channels, repeat));
                        }
                        else if (engine == PeerRun.Floor)
                        {
                            peer.Floor.Add(await RunFloorOnceAsync(ram, channels, repeat, ct, "peer-floor"));
                        }

                        Save();
                    }
                }

                foreach (bool qemuTurn in options.RunsPeerPart("peer-idle") ? [qemuFirst, !qemuFirst] : (bool[])[])
                {
                    if (qemuTurn && qemu is not null)
                    {
                        string stem = Path.Combine(options.OutDir, "runs", $"peer-idle-{repeat}");
                        peer.Runs.Add(await qemu.IdleAsync(ram, blob, channels: 1, repeat, stem, ct));
                    }
                    else if (!qemuTurn)
                    {
                        foreach (bool hints in new[] { false, true })
                        {
                            var run = await RunMigrationAsync($"peer-{idle.Name}", ram, idle.WorkloadArgs,
                                BenchScenario.Uncapped, hints, repeat, channels: 2, ct);
                            peer.Runs.Add(Ours(run, hints ? "idle-hints" : "idle", 2, repeat));
                        }
                    }

                    Save();
                }
            }
        }
        finally
        {
            File.Delete(sourceFile);
            File.Delete(blob);
        }

        if (options.RunsPeerPart("peer-stale"))
        {
            await RunPeerStaleAsync(qemu, peer, work, ct);
        }

        _results.Iperf3.Add(await Iperf3.RunAsync(seconds, output, ct));
        Save();
    }

    /// <summary>
    /// Stale free memory with and without free page hinting. QEMU: two real Linux guests (hints on, hints off)
    /// boot once and fill 75% of their RAM in tmpfs and delete it; each repeat migrates each of them to a fresh
    /// destination and resumes the source for the next. Ours: a memhog guest of the same size that filled and freed
    /// the same share, hints off and on, two channels as it runs by default.
    /// </summary>
    private async Task RunPeerStaleAsync(QemuPeer? qemu, PeerResults peer, string work, CancellationToken ct)
    {
        long ram = options.Quick ? 1L << 30 : 4L << 30;
        long fillMiB = (ram >> 20) * 3 / 4;
        string[] staleArgs = ["--workload", "memhog", "--memhog-share", "0.75", "--page-cache-share", "0.045"];
        var linux = new Dictionary<bool, QemuVm>();
        try
        {
            if (qemu is not null)
            {
                (peer.LinuxGuest, peer.LinuxUnavailable) = await BootLinuxGuestsAsync(qemu, ram, fillMiB, work, linux,
                    ct);
                if (peer.LinuxUnavailable is string why)
                {
                    output.WriteLine($"bench: QEMU's Linux guest rows are n/a: {why}");
                }
            }

            for (int repeat = 1; repeat <= options.Repeat; repeat++)
            {
                bool qemuFirst = repeat % 2 == 1;
                foreach (bool qemuTurn in new[] { qemuFirst, !qemuFirst })
                {
                    foreach (bool hints in new[] { false, true })
                    {
                        if (qemuTurn && linux.TryGetValue(hints, out var source))
                        {
                            string stem = Path.Combine(options.OutDir, "runs",
                                $"peer-stale-hints-{(hints ? "on" : "off")}-{repeat}");
                            peer.Runs.Add(await qemu!.StaleLinuxAsync(source, peer.LinuxGuest!, ram, hints, fillMiB,
                                repeat, stem, ct));
                        }
                        else if (!qemuTurn)
                        {
                            var run = await RunMigrationAsync($"peer-stale-{ram >> 30}g", ram, staleArgs,
                                BenchScenario.Uncapped, hints, repeat, channels: 2, ct);
                            peer.Runs.Add(Ours(run, hints ? "stale-hints" : "stale", 2, repeat));
                        }

                        Save();
                    }
                }
            }
        }
        finally
        {
            foreach (var vm in linux.Values)
            {
                await vm.DisposeAsync();
            }
        }
    }

    /// <summary>
    /// Builds the Linux guest and boots it twice (hints off, on) into <paramref name="booted"/> as paused sources;
    /// the guest, or null and why they cannot run.
    /// </summary>
    private async Task<(LinuxGuest? Guest, string? Reason)> BootLinuxGuestsAsync(QemuPeer qemu, long ram,
        long fillMiB, string work, Dictionary<bool, QemuVm> booted, CancellationToken ct)
    {
        // Two sources (their filled share plus QEMU), a preallocated destination, and ours' source and target.
        long needed = (long)(4.5 * ram), available = LinuxGuest.AvailableBytes();
        if (available < needed)
        {
            return (null, $"the two Linux guests, a destination and ours need {needed >> 30} GiB available, the " +
                $"machine has {available >> 30} GiB");
        }

        var (guest, reason) = await LinuxGuest.PrepareAsync(work, output, ct);
        if (guest is null)
        {
            return (null, reason);
        }

        string Stem(bool hints) => Path.Combine(options.OutDir, "runs", $"peer-linux-hints-{(hints ? "on" : "off")}");
        string Serial(bool hints) => Stem(hints) + ".serial.log";
        var watch = Stopwatch.StartNew();
        foreach (bool hints in new[] { false, true })
        {
            booted[hints] = await qemu.BootLinuxAsync(guest, ram, hints, fillMiB, Serial(hints),
                Stem(hints) + ".qemu.log", ct);
        }

        foreach (bool hints in new[] { false, true })
        {
            if (!await LinuxGuest.WaitForAsync(Serial(hints), LinuxGuest.Ready, TimeSpan.FromMinutes(15), ct))
            {
                return (null, $"the Linux guest (hints {(hints ? "on" : "off")}) did not get ready in 15 minutes; " +
                    $"see {Serial(hints)}");
            }
        }

        output.WriteLine($"bench: both Linux guests booted, filled {fillMiB} MiB and freed it in " +
            $"{watch.Elapsed.TotalSeconds:F0} s (TCG)");
        foreach (var vm in booted.Values)
        {
            await vm.Qmp.ExecuteAsync("stop", null, ct); // each runs only for its own migration
        }

        return (guest, null);
    }

    /// <summary>
    /// The order of the random RAM runs at one channel count: QEMU, ours, the floor when QEMU goes first, else the
    /// reverse, so over two repeats a drift of the machine hits QEMU and the floor alike and ours sits between them.
    /// </summary>
    public static IReadOnlyList<string> RandomOrder(bool qemuFirst) => qemuFirst
        ? [PeerRun.Qemu, PeerRun.Ours, PeerRun.Floor]
        : [PeerRun.Floor, PeerRun.Ours, PeerRun.Qemu];

    private static PeerRun Ours(BenchRun run, string work, int channels, int repeat) => new()
    {
        Engine = PeerRun.Ours,
        Work = work,
        Channels = channels,
        Repeat = repeat,
        TotalMs = run.Source?.Timing.TotalMs ?? 0,
        DowntimeMs = run.Source?.Timing.DowntimeMs ?? 0,
        BytesOnWire = run.Source?.Transfer.BytesOnWire ?? 0,
        SourceCpuSeconds = run.Source?.Process?.MigrationCpuSeconds ?? 0,
        TargetCpuSeconds = run.TargetProcess?.MigrationCpuSeconds ?? 0,
        Verified = run.Source?.Verified,
        Error = run.Error,
        Log = run.SourceLog is null ? null : Path.GetFileName(run.SourceLog),
    };
}
