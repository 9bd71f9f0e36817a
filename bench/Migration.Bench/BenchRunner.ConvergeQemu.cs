using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Migration.Bench.Peers;

namespace Migration.Bench;

/// <summary>
/// What <c>--only converge-qemu</c> runs: links (<c>1g</c>, <c>10g</c>: Gbit/s), the guest's asked dirty rates
/// (<c>2x</c>: times the link; <c>62.5</c>: MB/s; <c>0</c>: as fast as it can), auto-converge off and/or on, the
/// working set (MiB; null: <see cref="WorkingSetFor"/> the link) and the timeout of one migration.
/// </summary>
internal sealed partial record ConvergeQemuOptions(IReadOnlyList<string> Links, IReadOnlyList<string> Rates,
    IReadOnlyList<bool> AutoConverge, int? WorkingSetMiB = null, int TimeoutSeconds = 90)
{
    /// <summary>
    /// After QEMU's runs of each repeat, ours migrates a guest of the same shape (RAM, working set, one vCPU, rate,
    /// link) with auto-converge and the dirty limit: the side-by-side table.
    /// </summary>
    public bool Ours { get; init; } = true;

    public static readonly ConvergeQemuOptions Default = new(["1g"], ["2x"], [false, true]);

    /// <summary>The options from the command line's values (null: the default), or null and what is wrong.</summary>
    public static (ConvergeQemuOptions? Options, string? Error) Parse(string[]? links, string[]? rates,
        string[]? auto, int? workingSetMiB, int? timeoutSeconds)
    {
        var o = new ConvergeQemuOptions(links is { Length: > 0 } ? links : Default.Links,
            rates is { Length: > 0 } ? rates : Default.Rates,
            auto is { Length: > 0 } ? [.. auto.Select(a => a == "on")] : Default.AutoConverge,
            workingSetMiB ?? Default.WorkingSetMiB, timeoutSeconds ?? Default.TimeoutSeconds);
        string? error =
            o.Links.FirstOrDefault(l => LinkBytes(l) is null) is string l
                ? $"--converge-link {l}: give Gbit/s as 1g, 2.5g or 10g"
            : o.Rates.FirstOrDefault(r => AskedMBps(r, 1) is null) is string r
                ? $"--converge-rate {r}: give MB/s (62.5; 0 = as fast as it can) or times the link (2x)"
            : auto?.FirstOrDefault(a => a is not ("on" or "off")) is string a ? $"--converge-auto {a}: on or off"
            : o.WorkingSetMiB is < 16 or > 8192 ? "--converge-ws takes 16..8192 MiB"
            : o.TimeoutSeconds is < 10 or > 1800 ? "--converge-timeout takes 10..1800 s"
            : null;
        return error is null ? (o, null) : (null, error);
    }

    /// <summary>
    /// The working set for a link: what it carries in about two seconds, 256 MiB per Gbit/s. It must be well above
    /// what the link carries within the downtime limit (300 ms: 37.5 MB at 1 Gbit/s, 375 MB at 10), or QEMU stops
    /// and copies the whole of it at once whatever the rate: with 256 MiB at 10 Gbit/s every run, 4x the link too,
    /// completed within 2 s.
    /// </summary>
    public static int WorkingSetFor(long linkBytesPerSecond) =>
        (int)Math.Max(256, Math.Round(linkBytesPerSecond * 8 / 1e9) * 256);

    /// <summary>
    /// The guest's RAM: the working set, an eighth more, and 256 MiB for the kernel and its initramfs (held in RAM),
    /// at least 512 MiB; with only 256 MiB more, a 2560 MiB working set was killed for memory.
    /// </summary>
    public static long RamFor(int workingSetMiB) =>
        Math.Max(512L << 20, (workingSetMiB + (workingSetMiB / 8) + 256L) << 20);

    /// <summary>"10g" as bytes/s (1.25e9), or null.</summary>
    public static long? LinkBytes(string link) =>
        LinkPattern().Match(link) is { Success: true } m
        && double.TryParse(m.Groups[1].Value, CultureInfo.InvariantCulture, out double gbit) && gbit is > 0 and <= 400
            ? ConvergeSettings.Gbit(gbit)
            : null;

    /// <summary>The table's name of a link: "1gbit".</summary>
    public static string LinkName(string link) => LinkPattern().Match(link).Groups[1].Value + "gbit";

    /// <summary>"2x" (of <paramref name="linkMBps"/>) or "62.5" as MB/s, or null.</summary>
    public static double? AskedMBps(string rate, double linkMBps) =>
        rate.EndsWith('x')
            ? double.TryParse(rate[..^1], CultureInfo.InvariantCulture, out double x) && x > 0 ? x * linkMBps : null
            : double.TryParse(rate, CultureInfo.InvariantCulture, out double r) && r >= 0 ? r : null;

    [GeneratedRegex("^([0-9]+(?:[.][0-9]+)?)g(?:bit)?$", RegexOptions.IgnoreCase)]
    private static partial Regex LinkPattern();
}

/// <summary>
/// <c>--only converge-qemu</c>: QEMU's half of the convergence benchmark on its own. A real Linux guest (TCG, one
/// vCPU) runs the dirtying program at each asked rate; for each link and repeat it is migrated with auto-converge
/// off and on (which goes first alternates by repeat), each run to a fresh destination.
/// </summary>
internal sealed partial class BenchRunner
{
    private async Task RunConvergeQemuAsync(CancellationToken ct)
    {
        var o = options.Converge ?? ConvergeQemuOptions.Default;
        string work = Path.Combine(Path.GetFullPath(options.OutDir), "converge-qemu");
        Directory.CreateDirectory(work);
        var results = _results.ConvergeQemu = new PeerConvergeResults();
        var (qemu, reason) = await QemuPeer.FindAsync(work, output, ct, options.Qemu);
        LinuxGuest? guest = null;
        if (qemu is not null)
        {
            results.QemuVersion = qemu.Version;
            results.LostWrites = qemu.TcgLosesWrites ? qemu.LostWritesNote : null;
            if (results.LostWrites is string lost)
            {
                output.WriteLine($"bench: {lost}");
            }

            var (dirty, why) = await DirtyProgram.BuildAsync(work, output, ct);
            (guest, reason) = dirty is null ? (null, why) : await LinuxGuest.PrepareAsync(work, output, ct, dirty);
        }

        if (qemu is null || guest is null)
        {
            results.Unavailable = reason;
            output.WriteLine($"bench: QEMU's convergence rows are n/a: {reason}");
            Save();
            return;
        }

        foreach (string link in o.Links)
        {
            long linkBytes = ConvergeQemuOptions.LinkBytes(link)!.Value;
            int ws = o.WorkingSetMiB ?? ConvergeQemuOptions.WorkingSetFor(linkBytes);
            long ram = ConvergeQemuOptions.RamFor(ws);
            if (LinuxGuest.AvailableBytes() < 3 * ram)
            {
                output.WriteLine($"bench: QEMU's {LinkName(link)} convergence rows are n/a: a source and a " +
                    $"destination of {ram >> 20} MiB need {3 * ram >> 20} MiB available with headroom");
                continue;
            }

            foreach (string rate in o.Rates)
            {
                double asked = ConvergeQemuOptions.AskedMBps(rate, linkBytes / 1e6)!.Value;
                var dirtyWork = new DirtyWork(ram, ws, asked);
                string stem = Path.Combine(options.OutDir, "runs",
                    string.Create(CultureInfo.InvariantCulture, $"converge-qemu-{LinkName(link)}-{asked:0.#}MBps"));
                QemuDirtyGuest source;
                try
                {
                    source = await qemu.BootDirtyGuestAsync(guest, dirtyWork, stem, ct);
                }
                catch (Exception ex) when (ex is InvalidOperationException or IOException or TimeoutException)
                {
                    output.WriteLine($"[qemu] converge: the busy guest did not boot: {ex.Message}");
                    results.Runs.Add(new PeerConvergeRun
                    {
                        Link = LinkName(link),
                        LinkBytesPerSecond = linkBytes,
                        AutoConverge = false,
                        Repeat = 0,
                        AskedMBps = asked,
                        WorkingSetMiB = ws,
                        RamBytes = ram,
                        Error = $"the busy guest did not boot: {ex.Message}",
                    });
                    continue;
                }

                await using var booted = source;
                results.DirtyLimit ??= await qemu.DirtyLimitNoteAsync(source.Vm, ct);
                for (int repeat = 1; repeat <= options.Repeat; repeat++)
                {
                    foreach (bool auto in repeat % 2 == 1 ? o.AutoConverge : o.AutoConverge.Reverse())
                    {
                        var settings = new ConvergeSettings(LinkName(link), linkBytes, auto)
                        {
                            Timeout = TimeSpan.FromSeconds(o.TimeoutSeconds),
                        };
                        results.Runs.Add(await qemu.ConvergeAsync(source, settings, repeat,
                            $"{stem}-ac-{(auto ? "on" : "off")}-{repeat}", ct));
                        Save();
                    }

                    if (o.Ours)
                    {
                        // QEMU's guest holds still (a completed run left it stopped) while ours migrates
                        if (!source.Paused)
                        {
                            await source.Vm.Qmp.ExecuteAsync("stop", null, ct);
                            source.Paused = true;
                        }

                        await RunOursBesideQemuAsync(new BesideQemu(LinkName(link), linkBytes, ws, ram, asked),
                            repeat, o.TimeoutSeconds, ct);
                    }
                }
            }
        }
    }

    private static string LinkName(string link) => ConvergeQemuOptions.LinkName(link);

    /// <summary>QEMU's convergence runs as a table, one row per run, and the dirty-limit's row.</summary>
    public static string ConvergeQemuMarkdown(BenchResults results)
    {
        if (results.ConvergeQemu is not { } c)
        {
            return string.Empty;
        }

        var inv = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        md.AppendLine(inv, $"## QEMU's convergence: a busy Linux guest under TCG ({c.QemuVersion ?? "QEMU n/a"})");
        md.AppendLine();
        if (c.Unavailable is string why)
        {
            md.AppendLine(inv, $"Not run: {why}.");
            return md.ToString();
        }

        md.AppendLine("One vCPU dirties a working set (WS) at a rate, one 8-byte word per 4 KiB page, paced on its " +
            "own CPU clock as a CPU-bound program (a throttled or descheduled vCPU writes less). Its rate (MB/s of " +
            "pages, 1 MB = 1e6 bytes) is its own, read off its serial port: before is the guest unmigrated just " +
            "before the run, and x link uses it, not the rate asked; during is while QEMU migrated it; after is on " +
            "the destination (on the source when the run was cancelled). Lost: 1 - during / before. A run that did " +
            "not complete in its time was cancelled (migrate_cancel). Runs on: the guest's rate lines went on at the " +
            "destination, its kernel printed no crash and every page of its working set held its last write.");
        md.AppendLine();
        if (c.LostWrites is string lost)
        {
            md.AppendLine(inv, $"**Not valid:** {lost}.");
            md.AppendLine();
        }

        md.AppendLine("| link, WS | auto-converge | asked MB/s | guest MB/s (x link) | result | total s | " +
            "downtime ms | MB sent | syncs | max throttle | guest MB/s during / after | lost | note |");
        md.AppendLine("|---|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|---|");
        string Mb(double? pps) => pps is double p ? (p * 4096 / 1e6).ToString("F1", inv) : "n/a";
        foreach (var r in c.Runs)
        {
            string result = r.Error is not null ? $"FAILED: {r.Error}"
                : r.Completed ? (r.DestinationRuns == true ? "completed, runs on" : "completed")
                : "did not complete";
            string notes = string.Join("; ", r.Notes.Where(n => !n.StartsWith("dirty-limit", StringComparison.Ordinal)
                && n != c.LostWrites));
            md.AppendLine(inv, $"| {r.Link}, {r.WorkingSetMiB} MiB | " +
                $"{(r.AutoConverge ? $"on ({r.Throttle})" : "off")} | " +
                $"{(r.AskedMBps == 0 ? "max" : r.AskedMBps.ToString("0.#", inv))} | " +
                $"{Mb(r.GuestBeforePps)} ({r.TimesLink?.ToString("F2", inv) ?? "n/a"}x) | {result} | " +
                $"{r.TotalMs / 1000:F1} | {r.DowntimeMs?.ToString("F0", inv) ?? "-"} | " +
                $"{r.BytesTransferred / 1e6:F0} | " +
                $"{r.DirtySyncCount} | {r.MaxThrottlePercent}% | {Mb(r.GuestDuringPps)} / {Mb(r.GuestAfterPps)} | " +
                $"{(r.ThroughputLost is double l ? (Math.Round(l * 100) + 0.0).ToString("F0", inv) + "%" : "n/a")} | " +
                $"{notes} |");
        }

        foreach (string link in c.Runs.Select(r => r.Link).Distinct())
        {
            md.AppendLine(inv, $"| {link} | dirty-limit | | | not run | | | | | | | | {c.DirtyLimit} |");
        }

        return md.ToString();
    }
}
