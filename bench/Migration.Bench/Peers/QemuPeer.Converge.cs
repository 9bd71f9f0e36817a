using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;

namespace Migration.Bench.Peers;

/// <summary>
/// A booted busy guest, the source of convergence runs: its QEMU, its serial port (the dirtying program's rate
/// lines) and one clock for every timestamp of its runs. A completed run leaves it paused; the next one resumes it.
/// </summary>
internal sealed class QemuDirtyGuest(QemuVm vm, LinuxGuest guest, DirtyWork work, DirtySerial serial, Stopwatch clock)
    : IAsyncDisposable
{
    public QemuVm Vm { get; } = vm;

    public LinuxGuest Guest { get; } = guest;

    public DirtyWork Work { get; } = work;

    public DirtySerial Serial { get; } = serial;

    public Stopwatch Clock { get; } = clock;

    /// <summary>Paused after a completed migration (post-migrate); running otherwise.</summary>
    public bool Paused { get; set; }

    /// <summary>The guest's rate over the last <paramref name="window"/> of rate lines (pages/s), or null.</summary>
    public double? RecentPps(TimeSpan window)
    {
        double now = Clock.Elapsed.TotalSeconds;
        return DirtyProgram.Rate(Serial.Samples, now - window.TotalSeconds, now);
    }

    public ValueTask DisposeAsync() => Vm.DisposeAsync();
}

internal sealed partial class QemuPeer
{
    /// <summary>
    /// Boots <paramref name="guest"/> (built with the dirtying program) on <paramref name="work"/>, and waits until
    /// the program has filled its working set and printed two rate lines.
    /// </summary>
    public async Task<QemuDirtyGuest> BootDirtyGuestAsync(LinuxGuest guest, DirtyWork work, string logStem,
        CancellationToken ct)
    {
        string size = Size(work.RamBytes), serialLog = logStem + ".src.serial.log";
        var clock = Stopwatch.StartNew();
        var vm = await QemuVm.StartAsync(qemu, size, $"memory-backend-ram,id=m,size={size}",
            guest.DirtyQemuArgs(work, serialLog), workDir, logStem + ".qemu-src.log", ct);
        var serial = new DirtySerial(serialLog);
        bool killed = false;
        if (!await serial.WaitAsync(clock, s => s.Samples.Count >= 2 || (killed = KilledForMemory(serialLog)),
            TimeSpan.FromMinutes(5), ct) || killed)
        {
            await vm.DisposeAsync();
            throw new TimeoutException(killed
                ? $"the guest killed the busy program for memory ({size} of RAM for a {work.WorkingSetMiB} MiB " +
                    $"working set); see {serialLog}"
                : $"the busy guest printed no rate in 5 minutes; see {serialLog}");
        }

        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"[qemu] busy guest up in {clock.Elapsed.TotalSeconds:F0} s (TCG): working set {work.WorkingSetMiB} MiB, " +
            $"asked {work.RateMBps:0.#} MB/s, first second {serial.Samples[^1].MBps:F1} MB/s"));
        return new QemuDirtyGuest(vm, guest, work, serial, clock);
    }

    /// <summary>
    /// Migrates the busy <paramref name="source"/> to a fresh destination at the link's bandwidth, with auto-converge
    /// on or off, polling <c>query-migrate</c> and the guest's serial port; cancels it after the settings' timeout
    /// ("did not complete"). Measures the guest's rate just before (unmigrated), during, and after (on the
    /// destination, or on the source when cancelled), and checks that the guest runs on at the destination.
    /// </summary>
    public async Task<PeerConvergeRun> ConvergeAsync(QemuDirtyGuest source, ConvergeSettings settings, int repeat,
        string logStem, CancellationToken ct)
    {
        var work = source.Work;
        var run = new PeerConvergeRun
        {
            Link = settings.LinkName,
            LinkBytesPerSecond = settings.LinkBytesPerSecond,
            AutoConverge = settings.AutoConverge,
            Repeat = repeat,
            DowntimeLimitMs = settings.DowntimeLimitMs,
            Throttle = settings.AutoConverge
                ? $"{settings.ThrottleInitial}+{settings.ThrottleIncrement} max {settings.MaxThrottle}" +
                    (settings.TailSlow ? " tailslow" : "")
                : "off",
            WorkingSetMiB = work.WorkingSetMiB,
            RamBytes = work.RamBytes,
            AskedMBps = work.RateMBps,
            Log = Path.GetFileName(logStem) + ".*",
        };
        string size = Size(work.RamBytes), destSerialLog = logStem + ".dst.serial.log";
        var clock = source.Clock;
        try
        {
            if (source.Paused)
            {
                await source.Vm.Qmp.ExecuteAsync("cont", null, ct);
                source.Paused = false;
            }

            await using var dest = await QemuVm.StartAsync(qemu, size,
                $"memory-backend-ram,id=m,size={size},prealloc=on",
                [.. source.Guest.DirtyQemuArgs(work, destSerialLog), "-incoming", "defer"], workDir,
                logStem + ".qemu-dst.log", ct);
            await SetUpConvergeAsync(source.Vm, settings, run, ct);

            // Unmigrated: the rate the guest reaches on its own, just before, with the destination already up.
            await source.Serial.WaitAsync(clock, _ => false, settings.Before, ct);
            double t0 = clock.Elapsed.TotalSeconds;
            run.GuestBeforePps = DirtyProgram.Rate(source.Serial.Samples, t0 - settings.Before.TotalSeconds, t0);
            run.AchievedMBps = run.GuestBeforePps * 4096 / 1e6;
            if (work.RateMBps > 0 && run.AchievedMBps < work.RateMBps * 0.9)
            {
                run.Notes.Add(string.Create(CultureInfo.InvariantCulture,
                    $"the guest reached {run.AchievedMBps:F1} of the {work.RateMBps:0.#} MB/s asked"));
            }

            var destSerial = new DirtySerial(destSerialLog);
            int port = Loopback.FreePort();
            await dest.Qmp.ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = $"tcp:127.0.0.1:{port}" }, ct);
            run.LoadAverage = LoadAverage();
            double sourceCpu = source.Vm.CpuSeconds(), destCpu = dest.CpuSeconds();
            t0 = clock.Elapsed.TotalSeconds;
            await source.Vm.Qmp.ExecuteAsync("migrate", new JsonObject { ["uri"] = $"tcp:127.0.0.1:{port}" }, ct);
            var info = await PollConvergeAsync(source, settings, run, t0, ct);
            double t1 = clock.Elapsed.TotalSeconds;
            run.TotalMs = info["total-time"]?.GetValue<long>() ?? (t1 - t0) * 1000;
            // A cancelled migration's last answer has no RAM figures: the last poll that had them counts.
            run.BytesTransferred = Math.Max(Long(info["ram"]?["transferred"]),
                run.Polls.Count > 0 ? run.Polls.Max(p => p.TransferredBytes) : 0);
            run.DirtySyncCount = Math.Max(run.DirtySyncCount, Long(info["ram"]?["dirty-sync-count"]));
            run.GuestDuringPps = DirtyProgram.Rate(source.Serial.Samples, t0, t1);
            if (run.Completed)
            {
                run.DowntimeMs = info["downtime"]?.GetValue<long>();
                await WaitForDestinationAsync(dest, TimeSpan.FromMinutes(2), ct);
                double stop = source.Vm.Qmp.Events.LastOrDefault(e => e.Name == "STOP").Timestamp;
                double resume = dest.Qmp.Events.LastOrDefault(e => e.Name == "RESUME").Timestamp;
                run.StopToResumeMs = stop > 0 && resume > 0 ? (resume - stop) * 1000 : null;
                source.Paused = true;
                double resumed = clock.Elapsed.TotalSeconds;
                await destSerial.WaitAsync(clock, _ => false, settings.After, ct);
                run.SourceCpuSeconds = source.Vm.CpuSeconds() - sourceCpu;
                run.TargetCpuSeconds = dest.CpuSeconds() - destCpu;
                var last = source.Serial.Samples.Count > 0 ? source.Serial.Samples[^1] : null;
                var onward = destSerial.Samples.Where(s => s.Pages > (last?.Pages ?? 0)).ToList();
                run.GuestAfterPps = DirtyProgram.Rate(onward, resumed, double.MaxValue);
                run.AfterOn = "destination";
                run.GuestCrash = LinuxGuest.FirstCrash(destSerialLog);
                run.StalePages = onward.Count > 0 ? onward[^1].Bad - (last?.Bad ?? 0) : null;
                run.FirstStale = destSerial.FirstBad;
                run.DestinationRuns = onward.Count >= 2 && run.GuestCrash is null && run.StalePages == 0;
                run.Error = run.DestinationRuns == true ? null
                    : run.GuestCrash is not null ? $"the guest's kernel crashed on the destination: {run.GuestCrash}"
                    : onward.Count < 2
                        ? $"the guest printed no rate on the destination in {settings.After.TotalSeconds:F0} s"
                    : $"the guest found {run.StalePages} page(s) of its working set stale on the destination " +
                        $"(lost writes): {run.FirstStale}";
            }
            else
            {
                await source.Serial.WaitAsync(clock, _ => false, settings.After, ct);
                run.SourceCpuSeconds = source.Vm.CpuSeconds() - sourceCpu;
                // A cancelled destination quits when its incoming stream breaks: its CPU time is gone with it.
                run.TargetCpuSeconds = CpuSecondsIfRunning(dest) is double cpu ? cpu - destCpu : 0;
                run.GuestAfterPps = DirtyProgram.Rate(source.Serial.Samples, t1, double.MaxValue);
                run.AfterOn = "source";
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or TimeoutException)
        {
            run.Error = ex.Message;
        }

        return ReportConverge(run);
    }

    /// <summary>
    /// Auto-converge and the throttle on the source, the link's bandwidth and the downtime limit; and why this QEMU
    /// cannot run its dirty-limit, which goes into the run's notes.
    /// </summary>
    private async Task SetUpConvergeAsync(QemuVm source, ConvergeSettings settings, PeerConvergeRun run,
        CancellationToken ct)
    {
        await source.Qmp.ExecuteAsync("migrate-set-capabilities", new JsonObject
        {
            ["capabilities"] = new JsonArray(
                new JsonObject { ["capability"] = "auto-converge", ["state"] = settings.AutoConverge }),
        }, ct);
        await source.Qmp.ExecuteAsync("migrate-set-parameters", new JsonObject
        {
            ["max-bandwidth"] = settings.LinkBytesPerSecond,
            ["downtime-limit"] = settings.DowntimeLimitMs,
            ["cpu-throttle-initial"] = settings.ThrottleInitial,
            ["cpu-throttle-increment"] = settings.ThrottleIncrement,
            ["max-cpu-throttle"] = settings.MaxThrottle,
            ["cpu-throttle-tailslow"] = settings.TailSlow,
        }, ct);
        run.Notes.Add(await DirtyLimitNoteAsync(source, ct));
        if (TcgLosesWrites)
        {
            run.Notes.Add(LostWritesNote);
        }
    }

    /// <summary>Why a QEMU before 9.0 cannot be trusted with a busy guest under TCG (see <see cref="TcgLosesWrites"/>).</summary>
    public string LostWritesNote =>
        $"{Version} loses dirty pages under TCG (fixed in QEMU 9.0: \"physmem: Fix migration dirty bitmap coherency " +
        "with TCG memory access\"): its rounds and times undercount the guest's writes; run with --qemu backports";

    /// <summary>
    /// Why the dirty-limit rows are missing: QEMU's dirty-limit (8.1+) throttles each vCPU from KVM's dirty ring,
    /// which TCG does not have, and older QEMUs have no such capability at all.
    /// </summary>
    public async Task<string> DirtyLimitNoteAsync(QemuVm vm, CancellationToken ct)
    {
        var caps = await vm.Qmp.ExecuteAsync("query-migrate-capabilities", null, ct) as JsonArray ?? [];
        bool has = caps.Any(c => c?["capability"]?.GetValue<string>() == "dirty-limit");
        return has
            ? "dirty-limit not run: it needs KVM's dirty ring (dirty-ring-size), and this QEMU runs under TCG"
            : $"dirty-limit not run: {Version} has no dirty-limit capability (QEMU 8.1+), and it needs KVM's " +
                "dirty ring, which TCG lacks";
    }

    /// <summary>
    /// Polls <c>query-migrate</c> (and the guest's serial port) until the migration ends; past the timeout it
    /// cancels it and waits for the cancel. The last answer.
    /// </summary>
    private static async Task<JsonNode> PollConvergeAsync(QemuDirtyGuest source, ConvergeSettings settings,
        PeerConvergeRun run, double t0, CancellationToken ct)
    {
        var clock = source.Clock;
        bool cancelled = false;
        while (true)
        {
            var info = await source.Vm.Qmp.ExecuteAsync("query-migrate", null, ct)
                ?? throw new InvalidOperationException("query-migrate returned nothing");
            double now = clock.Elapsed.TotalSeconds;
            source.Serial.Poll(now);
            string status = info["status"]?.GetValue<string>() ?? "none";
            var ram = info["ram"];
            var poll = new ConvergePoll((now - t0) * 1000, status, (int)Long(info["cpu-throttle-percentage"]),
                Long(ram?["dirty-sync-count"]), Long(ram?["transferred"]), Long(ram?["remaining"]),
                Long(ram?["dirty-pages-rate"]), ram?["mbps"]?.GetValue<double>() ?? 0,
                info["expected-downtime"]?.GetValue<long>(),
                source.Serial.Samples.Count > 0 ? source.Serial.Samples[^1].Pps : null,
                source.Serial.Samples.Count > 0 ? source.Serial.Samples[^1].Run : null);
            run.Polls.Add(poll);
            run.MaxThrottlePercent = Math.Max(run.MaxThrottlePercent, poll.ThrottlePercent);
            run.DirtySyncCount = Math.Max(run.DirtySyncCount, poll.DirtySyncCount);
            run.Status = status;
            if (status is "completed" or "failed" or "cancelled")
            {
                run.Completed = status == "completed";
                if (status == "failed")
                {
                    run.Error = $"QEMU's migration failed: {info["error-desc"]}";
                }

                return info;
            }

            if (!cancelled && now - t0 > settings.Timeout.TotalSeconds)
            {
                await source.Vm.Qmp.ExecuteAsync("migrate_cancel", null, ct);
                cancelled = true;
            }
            else if (cancelled && now - t0 > settings.Timeout.TotalSeconds + 60)
            {
                throw new TimeoutException("QEMU's migration did not end within a minute of migrate_cancel");
            }

            await Task.Delay(settings.PollInterval, ct);
        }
    }

    /// <summary>The destination has loaded everything once its own query-migrate says so; then it resumes.</summary>
    private static async Task WaitForDestinationAsync(QemuVm dest, TimeSpan limit, CancellationToken ct)
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            var incoming = await dest.Qmp.ExecuteAsync("query-migrate", null, ct);
            var state = await dest.Qmp.ExecuteAsync("query-status", null, ct); // collects the RESUME event
            if (incoming?["status"]?.GetValue<string>() is "completed" or null
                && state?["status"]?.GetValue<string>() == "running")
            {
                return;
            }

            if (watch.Elapsed > limit)
            {
                throw new TimeoutException("QEMU's destination did not resume after the migration");
            }

            await Task.Delay(50, ct);
        }
    }

    private PeerConvergeRun ReportConverge(PeerConvergeRun run)
    {
        var inv = CultureInfo.InvariantCulture;
        string Pps(double? pps) => pps is double p ? (p * 4096 / 1e6).ToString("F1", inv) : "n/a";
        output.WriteLine(run.Error is not null && !run.Completed && run.Status == "none"
            ? $"[qemu] converge {run.Label} FAILED: {run.Error}"
            : string.Create(inv,
                $"[qemu] converge {run.Label}: {(run.Completed ? "completed" : $"did not complete ({run.Status})")}" +
                $" in {run.TotalMs,6:F0} ms, downtime {run.DowntimeMs?.ToString("F0", inv) ?? "-"} ms, " +
                $"{run.BytesTransferred / 1e6:F0} MB, {run.DirtySyncCount} syncs, throttle max " +
                $"{run.MaxThrottlePercent}%; guest MB/s before {Pps(run.GuestBeforePps)} " +
                $"({run.TimesLink:F2}x link) during {Pps(run.GuestDuringPps)} after {Pps(run.GuestAfterPps)} " +
                $"on the {run.AfterOn ?? "-"}{(run.DestinationRuns == true ? ", runs on" : "")}" +
                $"{(run.Error is null ? "" : $"; ERROR: {run.Error}")}"));
        return run;
    }

    /// <summary>Whether the guest's kernel killed a process for memory (the busy program, the only big one).</summary>
    private static bool KilledForMemory(string serialLog)
    {
        if (!File.Exists(serialLog))
        {
            return false;
        }

        using var stream = new FileStream(serialLog, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd().Contains("Out of memory: Killed process", StringComparison.Ordinal);
    }

    private static double? CpuSecondsIfRunning(QemuVm vm)
    {
        try
        {
            return vm.CpuSeconds();
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    private static long Long(JsonNode? node) => node?.GetValue<long>() ?? 0;
}
