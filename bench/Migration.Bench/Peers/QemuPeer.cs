using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;

namespace Migration.Bench.Peers;

/// <summary>
/// QEMU's migration of the same work as ours, driven over QMP on this machine: RAM of random content in a memory
/// backend file with the VM paused (the raw page stream; the destination's file is compared with the source's
/// afterwards), and a running blank VM (SeaBIOS, nothing to boot) holding the share of RAM our idle guest keeps in use.
/// QEMU runs under TCG; its vCPUs do nothing that matters in either case. Figures come from <c>query-migrate</c>.
/// </summary>
internal sealed partial class QemuPeer(string qemu, string workDir, TextWriter output)
{
    private const long Gib = 1L << 30;
    private const int DowntimeLimitMs = 300;
    private const long MaxBandwidth = 100 * Gib; // bytes/s: uncapped, as ours runs

    public string Version { get; private set; } = string.Empty;

    /// <summary>
    /// QEMU before 9.0 loses writes of a running guest under TCG: its 64-pages-at-a-time dirty bitmap sync cleared
    /// the migration's bits without re-arming the TCG TLB's dirty tracking, so stores through an entry that was
    /// already dirty marked nothing and the page was not sent again (fixed upstream in 9.0 by "physmem: Fix migration
    /// dirty bitmap coherency with TCG memory access"). Its figures for a busy guest are not valid.
    /// </summary>
    public bool TcgLosesWrites => VersionNumber() is { } v && v < new Version(9, 0);

    private Version? VersionNumber() =>
        System.Text.RegularExpressions.Regex.Match(Version, @"version (\d+)\.(\d+)") is { Success: true } m
            ? new Version(int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture),
                int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture))
            : null;

    /// <summary>
    /// The QEMU to run: the machine's, installed from Debian when missing and allowed; or with
    /// <paramref name="choice"/> (<c>--qemu</c>) a qemu-system-x86_64 at that path, or "backports" for the one of
    /// this Debian release's backports, unpacked into <paramref name="workDir"/> (<see cref="QemuBackports"/>).
    /// Null with the reason when there is none.
    /// </summary>
    public static async Task<(QemuPeer? Peer, string? Reason)> FindAsync(string workDir, TextWriter output,
        CancellationToken ct, string? choice = null)
    {
        if (!OperatingSystem.IsLinux())
        {
            return (null, "QEMU side by side needs Linux");
        }

        string? qemu;
        if (choice == "backports")
        {
            (qemu, string? why) = await QemuBackports.FetchAsync(workDir, output, ct);
            if (qemu is null)
            {
                return (null, why);
            }
        }
        else if (choice is not null)
        {
            qemu = File.Exists(choice) ? Path.GetFullPath(choice) : null;
            if (qemu is null)
            {
                return (null, $"--qemu {choice}: no such file");
            }
        }
        else
        {
            qemu = await DebianPackage.EnsureAsync("qemu-system-x86_64", "qemu-system-x86", output, ct);
            if (qemu is null)
            {
                return (null, "qemu-system-x86_64 is not installed and could not be installed " +
                    "(apt-get install qemu-system-x86 as root)");
            }
        }

        var peer = new QemuPeer(qemu, workDir, output);
        peer.Version = await peer.VersionAsync(ct);
        return (peer, null);
    }

    /// <summary>Fills <paramref name="path"/> with <paramref name="bytes"/> of random data (both cores).</summary>
    public static void FillRandom(string path, long bytes)
    {
        using var handle = File.OpenHandle(path, FileMode.Create, FileAccess.Write, FileShare.None,
            FileOptions.None, preallocationSize: bytes);
        RandomAccess.SetLength(handle, bytes);
        const int Chunk = 64 << 20;
        Parallel.For(0, (bytes + Chunk - 1) / Chunk, new ParallelOptions { MaxDegreeOfParallelism = 2 },
            () => new byte[Chunk], (i, _, buffer) =>
            {
                Random.Shared.NextBytes(buffer);
                long offset = i * (long)Chunk;
                RandomAccess.Write(handle, buffer.AsSpan(0, (int)Math.Min(Chunk, bytes - offset)), offset);
                return buffer;
            }, _ => { });
    }

    /// <summary>
    /// Random RAM: both VMs paused (<c>-S</c>), the source's RAM the file <paramref name="sourceFile"/>, the
    /// destination's a preallocated file beside it; afterwards the two files must be equal. The source maps its file
    /// with <c>prealloc=on</c> too, which faults every page in and keeps its bytes (QEMU touches each page without
    /// changing it): our source's RAM is mapped before its migration starts, so QEMU's is too. Without it, QEMU's
    /// migration paid a first-touch fault per page, which on a host slow at those cut its rate sevenfold in one sitting.
    /// </summary>
    public async Task<PeerRun> RandomRamAsync(string sourceFile, long ramBytes, int channels, int repeat,
        string logStem, CancellationToken ct)
    {
        var run = NewRun($"random-{channels}ch", channels, repeat, logStem);
        string destFile = Path.Combine(Path.GetDirectoryName(sourceFile)!, $"qemu-dst-{Environment.ProcessId}.ram");
        string size = Size(ramBytes);
        try
        {
            await using (var source = await QemuVm.StartAsync(qemu, size,
                $"memory-backend-file,id=m,size={size},mem-path={sourceFile},share=on,prealloc=on", ["-S"], workDir,
                logStem + ".qemu-src.log", ct))
            await using (var dest = await QemuVm.StartAsync(qemu, size,
                $"memory-backend-file,id=m,size={size},mem-path={destFile},share=on,prealloc=on",
                ["-S", "-incoming", "defer"], workDir, logStem + ".qemu-dst.log", ct))
            {
                await MigrateAsync(source, dest, channels, run, ct);
            }

            run.Verified = SameContent(sourceFile, destFile);
            if (run.Verified == false)
            {
                run.Error = "the destination's RAM differs from the source's";
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or TimeoutException)
        {
            run.Error = ex.Message;
        }
        finally
        {
            File.Delete(destFile);
        }

        return Report(run);
    }

    /// <summary>
    /// A running blank VM with anonymous RAM, the file <paramref name="blob"/> of random data loaded into it
    /// (<c>-device loader</c>), as our idle guest keeps that share in use; the destination preallocates and resumes.
    /// </summary>
    public async Task<PeerRun> IdleAsync(long ramBytes, string blob, int channels, int repeat, string logStem,
        CancellationToken ct)
    {
        var run = NewRun("idle", channels, repeat, logStem);
        string size = Size(ramBytes);
        string[] loader = ["-device", $"loader,file={blob},addr=0x10000000"];
        try
        {
            await using var source = await QemuVm.StartAsync(qemu, size, $"memory-backend-ram,id=m,size={size}",
                ["-S", .. loader], workDir, logStem + ".qemu-src.log", ct);
            await using var dest = await QemuVm.StartAsync(qemu, size,
                $"memory-backend-ram,id=m,size={size},prealloc=on", ["-incoming", "defer", .. loader], workDir,
                logStem + ".qemu-dst.log", ct);
            await source.Qmp.ExecuteAsync("cont", null, ct);
            await Task.Delay(TimeSpan.FromSeconds(2), ct); // SeaBIOS finds nothing to boot and idles
            await MigrateAsync(source, dest, channels, run, ct);
            StopToResume(source, dest, run);
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or TimeoutException)
        {
            run.Error = ex.Message;
        }

        return Report(run);
    }

    /// <summary>
    /// Boots <paramref name="guest"/> as a migration source; it fills and frees <paramref name="fillMiB"/> and
    /// idles. The caller waits for <see cref="LinuxGuest.Ready"/> on <paramref name="serialLog"/>.
    /// </summary>
    public Task<QemuVm> BootLinuxAsync(LinuxGuest guest, long ramBytes, bool hints, long fillMiB, string serialLog,
        string logPath, CancellationToken ct) =>
        QemuVm.StartAsync(qemu, Size(ramBytes), $"memory-backend-ram,id=m,size={Size(ramBytes)}",
            guest.QemuArgs(hints, fillMiB, serialLog), workDir, logPath, ct);

    /// <summary>
    /// Stale free memory on a real Linux guest: resumes the paused <paramref name="source"/> (booted by
    /// <see cref="BootLinuxAsync"/>), lets it idle, and migrates it over one channel to a fresh preallocated
    /// destination, where it must go on beating and print no kernel crash. The source ends paused
    /// (post-migrate), ready for the next repeat.
    /// </summary>
    public async Task<PeerRun> StaleLinuxAsync(QemuVm source, LinuxGuest guest, long ramBytes, bool hints,
        long fillMiB, int repeat, string logStem, CancellationToken ct)
    {
        var run = NewRun(hints ? "stale-hints" : "stale", channels: 1, repeat, logStem);
        string size = Size(ramBytes), serial = logStem + ".dst.serial.log";
        try
        {
            await source.Qmp.ExecuteAsync("cont", null, ct);
            await Task.Delay(TimeSpan.FromSeconds(5), ct); // the balloon gives back the last run's hints; it idles
            await using var dest = await QemuVm.StartAsync(qemu, size,
                $"memory-backend-ram,id=m,size={size},prealloc=on",
                [.. guest.QemuArgs(hints, fillMiB, serial), "-incoming", "defer"], workDir, logStem + ".qemu-dst.log",
                ct);
            await MigrateAsync(source, dest, channels: 1, run, ct);
            StopToResume(source, dest, run);
            bool alive = await LinuxGuest.WaitForAsync(serial, LinuxGuest.Alive, TimeSpan.FromSeconds(30), ct);
            run.GuestCrash = LinuxGuest.FirstCrash(serial);
            run.Verified = alive && run.GuestCrash is null;
            if (run.Verified == false)
            {
                run.Error = run.GuestCrash is null
                    ? "the guest did not run on the destination (no heartbeat in 30 s)"
                    : $"the guest's kernel crashed on the destination: {run.GuestCrash}";
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or TimeoutException)
        {
            run.Error = ex.Message;
        }

        return Report(run);
    }

    /// <summary>The guest-visible gap: the source's last STOP event to the destination's RESUME event.</summary>
    private static void StopToResume(QemuVm source, QemuVm dest, PeerRun run)
    {
        double stop = source.Qmp.Events.LastOrDefault(e => e.Name == "STOP").Timestamp;
        double resume = dest.Qmp.Events.LastOrDefault(e => e.Name == "RESUME").Timestamp;
        if (stop > 0 && resume > 0)
        {
            run.StopToResumeMs = (resume - stop) * 1000;
        }
    }

    /// <summary>
    /// Sets both sides up (multifd when more than one channel), migrates over loopback TCP and polls
    /// <c>query-migrate</c> every 20 ms until it ends; then waits for the destination to finish loading.
    /// </summary>
    private static async Task MigrateAsync(QemuVm source, QemuVm dest, int channels, PeerRun run,
        CancellationToken ct)
    {
        var caps = new JsonArray(new JsonObject { ["capability"] = "multifd", ["state"] = channels > 1 });
        foreach (var vm in new[] { source, dest })
        {
            await vm.Qmp.ExecuteAsync("migrate-set-capabilities",
                new JsonObject { ["capabilities"] = caps.DeepClone() }, ct);
            if (channels > 1)
            {
                await vm.Qmp.ExecuteAsync("migrate-set-parameters", new JsonObject { ["multifd-channels"] = channels },
                    ct);
            }
        }

        await source.Qmp.ExecuteAsync("migrate-set-parameters",
            new JsonObject { ["max-bandwidth"] = MaxBandwidth, ["downtime-limit"] = DowntimeLimitMs }, ct);
        int port = Loopback.FreePort();
        await dest.Qmp.ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = $"tcp:127.0.0.1:{port}" }, ct);
        run.LoadAverage = LoadAverage();
        double sourceCpu = source.CpuSeconds(), destCpu = dest.CpuSeconds();
        await source.Qmp.ExecuteAsync("migrate", new JsonObject { ["uri"] = $"tcp:127.0.0.1:{port}" }, ct);
        var limit = Stopwatch.StartNew();
        JsonNode info;
        while (true)
        {
            info = await source.Qmp.ExecuteAsync("query-migrate", null, ct)
                ?? throw new InvalidOperationException("query-migrate returned nothing");
            string status = info["status"]?.GetValue<string>() ?? "none";
            if (status is "completed" or "failed" or "cancelled")
            {
                if (status != "completed")
                {
                    throw new InvalidOperationException($"QEMU's migration ended {status}: {info["error-desc"]}");
                }

                break;
            }

            if (limit.Elapsed > TimeSpan.FromMinutes(15))
            {
                await source.Qmp.ExecuteAsync("migrate_cancel", null, ct);
                throw new TimeoutException("QEMU's migration took longer than 15 minutes");
            }

            await Task.Delay(20, ct);
        }

        while (true) // the destination has loaded everything once its own query-migrate says so
        {
            var incoming = await dest.Qmp.ExecuteAsync("query-migrate", null, ct);
            _ = await dest.Qmp.ExecuteAsync("query-status", null, ct); // collects the RESUME event
            if (incoming?["status"]?.GetValue<string>() is "completed" or null)
            {
                break;
            }

            if (limit.Elapsed > TimeSpan.FromMinutes(17))
            {
                throw new TimeoutException("QEMU's destination did not finish loading");
            }

            await Task.Delay(20, ct);
        }

        run.SourceCpuSeconds = source.CpuSeconds() - sourceCpu;
        run.TargetCpuSeconds = dest.CpuSeconds() - destCpu;
        run.TotalMs = info["total-time"]?.GetValue<long>() ?? 0;
        run.DowntimeMs = info["downtime"]?.GetValue<long>() ?? 0;
        run.BytesOnWire = info["ram"]?["transferred"]?.GetValue<long>() ?? 0;
    }

    private static PeerRun NewRun(string work, int channels, int repeat, string logStem) => new()
    {
        Engine = PeerRun.Qemu,
        Work = work,
        Channels = channels,
        Repeat = repeat,
        Log = Path.GetFileName(logStem) + ".qemu-*.log",
    };

    private PeerRun Report(PeerRun run)
    {
        output.WriteLine(run.Error is null
            ? string.Create(CultureInfo.InvariantCulture,
                $"[qemu] {run.Work,-12} #{run.Repeat} total {run.TotalMs,7:F0} ms  downtime {run.DowntimeMs,4:F0} ms" +
                $"{(run.StopToResumeMs is double g ? $" (stop->resume {g:F0} ms)" : "")}  " +
                $"{run.BytesOnWire / 1e6,8:F1} MB  {run.GBps:F2} GB/s  cpu {run.SourceCpuSeconds:F1}+" +
                $"{run.TargetCpuSeconds:F1} s{Checked(run)}")
            : $"[qemu] {run.Work,-12} #{run.Repeat} FAILED: {run.Error}");
        return run;
    }

    private static string Checked(PeerRun run) => run.Verified switch
    {
        true when run.Work.StartsWith("stale", StringComparison.Ordinal) => "  guest runs on the destination",
        true => "  RAM identical",
        _ => string.Empty,
    };

    private async Task<string> VersionAsync(CancellationToken ct)
    {
        var psi = new ProcessStartInfo(qemu, "--version") { RedirectStandardOutput = true, UseShellExecute = false };
        using var p = Process.Start(psi)!;
        string text = await p.StandardOutput.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct);
        return text.Split('\n')[0].Trim();
    }

    /// <summary>Compares two RAM files in 16 MiB pieces.</summary>
    private static bool SameContent(string a, string b)
    {
        using var fa = new FileStream(a, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1);
        using var fb = new FileStream(b, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1);
        if (fa.Length != fb.Length)
        {
            return false;
        }

        byte[] ba = new byte[16 << 20], bb = new byte[16 << 20];
        while (true)
        {
            int na = fa.ReadAtLeast(ba, ba.Length, throwOnEndOfStream: false);
            int nb = fb.ReadAtLeast(bb, bb.Length, throwOnEndOfStream: false);
            if (na != nb || !ba.AsSpan(0, na).SequenceEqual(bb.AsSpan(0, nb)))
            {
                return false;
            }

            if (na == 0)
            {
                return true;
            }
        }
    }

    private static string Size(long bytes) => bytes % Gib == 0 ? $"{bytes / Gib}G" : $"{bytes >> 20}M";

    private static double LoadAverage() =>
        double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture);
}
