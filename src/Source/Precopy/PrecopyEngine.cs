using System.Buffers;
using System.Diagnostics;
using System.Text.Json;
using Google.Protobuf;
using Grpc.Core;
using Migration.Protocol;
using Migration.Shared.Balloon;
using Migration.Shared.Concurrency;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Reporting;
using Migration.Shared.Verification;
using Migration.Source.Transport;

namespace Migration.Source.Precopy;

/// <summary>
/// QEMU-shaped precopy: enable dirty logging, send everything once (round 0), then sync and resend what was dirtied
/// until the expected downtime fits the limit; then pause the guest, sync a last time, send the rest with vCPU state
/// and digests, and let the target verify and resume.
/// </summary>
/// <remarks>
/// <para>Failure never costs the guest: on any error or cancel the source guest is resumed (if paused) and keeps
/// running, dirty logging is switched off, and a new attempt starts again from a full bitmap, so nothing a failed
/// attempt consumed can be missed.</para>
/// <para>Ordering across channels (race R11): the engine waits at the end of every round until all channels have
/// written that round, and batches carry their round so the target drops a late older copy.</para>
/// </remarks>
public sealed class PrecopyEngine
{
    private readonly VirtualMachine _vm;
    private readonly MigrationOptions _options;
    private readonly TimeProvider _time;
    private readonly IProgress<RoundProgress>? _progress;
    private readonly object _bitmapLock = new(); // QEMU's bitmap_mutex: the send path, syncs and hint application

    public PrecopyEngine(VirtualMachine vm, MigrationOptions options, IProgress<RoundProgress>? progress = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(vm);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        options.ValidateFor(vm.Config);
        _vm = vm;
        _options = options;
        _progress = progress;
        _time = time ?? TimeProvider.System;
    }

    public async Task<MigrationReport> MigrateAsync(CancellationToken ct = default)
    {
        var report = NewReport();
        string id = report.MigrationId!;
        long start = _time.GetTimestamp();
        var hooks = _options.Hooks;
        var counters = new TransferCounters();
        var limiter = new BandwidthLimiter(_options.MaxBandwidthBytesPerSecond, _time);
        await using var transport = _options.TransportFactory?.Invoke(_vm, counters)
            ?? new GrpcMigrationTransport(_options.Target, _vm.Ram, _options.Compress, _options.PagesPerBatch, limiter, counters);
        var channels = new List<IPageSink>();
        var device = _options.Hints ? _vm.HintDevice : null;
        using var hintThreadStop = new CancellationTokenSource();
        Thread? hintThread = null;
        bool paused = false;
        long downtimeStart = 0;
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // The streams get a token of their own: on cancel the target hears why (Cancel) before the streams reset.
        using var streams = new CancellationTokenSource();
        var log = _vm.DirtyLog;
        var bitmap = new PageBitmap(_vm.Ram.PageCount);
        try
        {
            var setup = report.Timing.SetupPhasesMs;
            long setupLap = start;
            await transport.BeginAsync(BeginRequest(id), ct).ConfigureAwait(false);
            setup["begin"] = Lap(ref setupLap);
            for (int i = 0; i < _options.Channels; i++)
            {
                channels.Add(transport.OpenChannel(id, streams.Token));
            }

            setup["openChannels"] = Lap(ref setupLap);

            // Setup (H1): logging on, everything to send, then the setup sync, which issues the first command id.
            bitmap.SetAll();
            if (device is not null && hooks.Has(Mutation.HintBeforeLogging))
            {
                device.BeginMigration(bitmap, _bitmapLock, log);
                device.AfterSync(vmRunning: true); // mutant R3: hints flow before writes are logged
                for (int i = 0; i < 16; i++)
                {
                    hooks.Preempt(); // the rest of setup takes a while: the window the bug opens
                }
            }

            log.Enable();
            if (device is not null && !hooks.Has(Mutation.HintBeforeLogging))
            {
                device.BeginMigration(bitmap, _bitmapLock, log);
            }

            if (device is not null && !_options.ExternalHintThread)
            {
                hintThread = new Thread(() => device.Run(hintThreadStop.Token)) { IsBackground = true, Name = "hint thread" };
                hintThread.Start();
            }

            setup["startLogging"] = Lap(ref setupLap);
            Sync(bitmap, device, vmRunning: true);
            setup["setupSync"] = Lap(ref setupLap);
            report.Timing.SetupMs = _time.GetElapsedTime(start).TotalMilliseconds;

            double bandwidth = 0;     // wire bytes per second, last round (progress and the non-convergence message)
            double dataPageRate = 0;  // non-zero pages per second, last round: what the downtime estimate uses
            long lastLogged = log.PagesLogged;
            long lastSync = _time.GetTimestamp();
            long previousRemaining = _vm.Ram.PageCount;
            for (int round = 0; ; round++)
            {
                long roundStart = _time.GetTimestamp();
                long bytesBefore = counters.BytesOnWire;
                long dataBefore = counters.PagesRaw + counters.PagesLz4;
                long dirtyAtStart = Remaining(bitmap);
                long sent = await SendRoundAsync(bitmap, log, channels, (uint)round, linked.Token).ConfigureAwait(false);
                double roundSeconds = _time.GetElapsedTime(roundStart).TotalSeconds;
                long roundBytes = counters.BytesOnWire - bytesBefore;
                // Rates from rounds of at least 64 pages; a tiny round's timing is mostly fixed overhead.
                long dataSent = counters.PagesRaw + counters.PagesLz4 - dataBefore;
                if (sent >= 64 || bandwidth == 0)
                {
                    bandwidth = roundBytes / Math.Max(roundSeconds, 1e-6);
                    if (dataSent > 0 || dataPageRate == 0)
                    {
                        dataPageRate = Math.Max(dataSent, 1) / Math.Max(roundSeconds, 1e-6);
                    }
                }

                // Sync: what did the guest dirty while we sent?
                Sync(bitmap, device, vmRunning: true, stopBefore: !hooks.Has(Mutation.SkipStopBeforeSync));
                long now = _time.GetTimestamp();
                long logged = log.PagesLogged;
                double dirtyRate = (logged - lastLogged) / Math.Max(_time.GetElapsedTime(lastSync, now).TotalSeconds, 1e-6);
                lastLogged = logged;
                lastSync = now;
                long remaining = Remaining(bitmap);
                // Remaining pages at the rate the last round moved pages that carry data. The pages still dirty at the end
                // are written ones, so zero pages (an index each) must not speed the estimate up, as they would in a
                // plain page rate; and a page costs what it cost on the wire, so LZ4 is credited, which QEMU's
                // full-page-over-bandwidth estimate is not (with compressible pages it never converges).
                double expectedMs = remaining / Math.Max(dataPageRate, 1) * 1000;
                report.Rounds.Add(new MigrationReport.RoundSection
                {
                    Round = round,
                    DirtyPages = dirtyAtStart,
                    PagesSent = sent,
                    Bytes = roundBytes,
                    Ms = roundSeconds * 1000,
                    DirtyRatePagesPerSec = dirtyRate,
                });
                _progress?.Report(new RoundProgress(round, false, remaining, counters.PagesSent, bandwidth / 1e6, expectedMs, "precopy"));

                // Stop once the transfer fits the limit, but not while rounds still cut what is left by a quarter or more
                // (unless that would run into the round limit): stop-and-copy also hashes every in-use page and waits
                // for the target's verification, which the estimate does not see, so a smaller final set is worth a
                // few short rounds. A hot set that keeps the remainder level ends this at once.
                bool shrinking = remaining < previousRemaining * 3 / 4 && round + 2 < _options.MaxRounds;
                previousRemaining = remaining;
                if (expectedMs <= _options.DowntimeLimit.TotalMilliseconds && !shrinking && round + 1 >= _options.MinRounds && _options.HoldPrecopy?.Invoke() != true)
                {
                    report.Timing.ExpectedDowntimeMs = expectedMs;
                    break;
                }

                if (round + 1 >= _options.MaxRounds || _time.GetElapsedTime(start) > _options.Timeout)
                {
                    throw new MigrationFailedException(
                        $"did not converge: after {round + 1} rounds {remaining} pages are still dirty (guest dirties {dirtyRate:F0} pages/s, " +
                        $"link moves {bandwidth / 1e6:F0} MB/s); expected downtime {expectedMs:F0} ms exceeds the {_options.DowntimeLimit.TotalMilliseconds:F0} ms limit");
                }
            }

            // Stop-and-copy. Pausing the VM also blocks the hint thread (H5); the final sync is wrapped like the others
            // and ends hinting with DONE because the VM is not running.
            var phases = report.Timing.DowntimePhasesMs;
            downtimeStart = _time.GetTimestamp();
            long lap = downtimeStart;
            _vm.Pause(); // under the fuzzer's scheduler, the VM's own scheduled stop
            paused = true;
            phases["pause"] = Lap(ref lap);
            _progress?.Report(new RoundProgress(report.Rounds.Count, true, Remaining(bitmap), counters.PagesSent, bandwidth / 1e6, report.Timing.ExpectedDowntimeMs, "stop-and-copy"));
            long finalStart = _time.GetTimestamp();
            bool unwrapped = hooks.Has(Mutation.ApplyWhileStopped);
            Sync(bitmap, device, vmRunning: false, stopBefore: !unwrapped, notifyAfter: !unwrapped);
            phases["finalSync"] = Lap(ref lap);
            long finalDirty = Remaining(bitmap);
            long finalBytesBefore = counters.BytesOnWire;
            uint finalRound = (uint)report.Rounds.Count;

            // RAM is frozen now: hash it while the channels push the last pages out (on the thread pool in production;
            // on this thread under the fuzzer's scheduler, which owns every thread that touches the guest).
            var free = _vm.Kernel.FreePageMap();
            var digestTask = hooks.YieldPoint is null
                ? Task.Run(() => PageDigests.Compute(_vm.Ram, free), linked.Token)
                : Task.FromResult(PageDigests.Compute(_vm.Ram, free));
            long finalSent = await SendRoundAsync(bitmap, log, channels, finalRound, linked.Token).ConfigureAwait(false);
            foreach (var channel in channels)
            {
                await channel.CompleteAsync(linked.Token).ConfigureAwait(false);
            }

            if (unwrapped)
            {
                device?.AfterSync(vmRunning: false); // mutant R9: DONE only once the last pages are out
            }

            phases["finalSend"] = Lap(ref lap);
            report.Rounds.Add(new MigrationReport.RoundSection
            {
                Round = (int)finalRound,
                DirtyPages = finalDirty,
                PagesSent = finalSent,
                Bytes = counters.BytesOnWire - finalBytesBefore,
                Ms = _time.GetElapsedTime(finalStart).TotalMilliseconds,
                Final = true,
            });

            // Device and vCPU state plus digests of every page the guest does not consider free.
            report.Guest.FreePages = free.Count;
            report.Guest.InUsePages = _vm.Ram.PageCount - free.Count;
            ulong[] digests = await digestTask.ConfigureAwait(false);
            var hint = _vm.HintDevice;
            var complete = new CompleteRequest
            {
                MigrationId = id,
                Device = new DeviceState
                {
                    HintStatus = (uint)hint.Status,
                    HintCmdId = hint.CommandId,
                    PoisonVal = hint.PoisonVal,
                    Features = hint.FeatureBits,
                },
                PageDigests = UnsafeByteOperations.UnsafeWrap(PageDigests.ToBytes(digests)),
                DigestPages = (ulong)digests.LongLength,
                FinalRound = finalRound,
                PagesSent = (ulong)counters.PagesSent,
            };
            complete.VcpuStates.AddRange(_vm.SaveVcpuStates().Select(s => ByteString.CopyFrom(s)));
            phases["sourceDigests"] = Lap(ref lap); // what hashing added beyond the final send
            var reply = await transport.CompleteAsync(complete, ct).ConfigureAwait(false);
            report.Timing.DowntimeMs = _time.GetElapsedTime(downtimeStart).TotalMilliseconds;
            double rpc = Lap(ref lap);
            foreach (var (name, ms) in reply.PhasesMs)
            {
                phases["target" + char.ToUpperInvariant(name[0]) + name[1..]] = ms;
                rpc -= ms;
            }

            phases["rpc"] = Math.Max(rpc, 0);
            report.Verification.PagesCompared = (long)reply.PagesCompared;
            report.Verification.MismatchedPages = (long)reply.MismatchedPages;
            report.Verification.GuestSelfCheck = reply.GuestSelfCheck;
            report.Verification.FirstMismatchedPages = [.. reply.FirstMismatches.Select(p => (long)p)];
            report.Verified = reply.Verified && reply.Resumed;
            if (!report.Verified)
            {
                throw new MigrationFailedException($"target did not verify the guest: {reply.Error}");
            }

            // The guest now runs on the target; this copy must never run again.
            device?.EndMigration();
            log.Disable();
            if (hooks.YieldPoint is null)
            {
                _vm.Shutdown();
            }

            report.Status = "completed";
        }
        catch (Exception ex) when (ex is MigrationFailedException or RpcException or IOException or OperationCanceledException or InvalidOperationException or HttpRequestException)
        {
            report.Status = ct.IsCancellationRequested ? "cancelled" : "failed";
            report.Error = ct.IsCancellationRequested ? "cancelled on request" : Describe(ex);
            await linked.CancelAsync().ConfigureAwait(false);
            await transport.CancelAsync(id, report.Error).ConfigureAwait(false);
            await streams.CancelAsync().ConfigureAwait(false);
            device?.EndMigration(); // H6: DONE, so the guest gives its held blocks back
            log.Disable();
            if (paused && _vm.State == VmRunState.Paused)
            {
                _vm.Resume(); // the source guest keeps running
            }

            if (downtimeStart != 0 && report.Timing.DowntimeMs == 0)
            {
                report.Timing.DowntimeMs = _time.GetElapsedTime(downtimeStart).TotalMilliseconds;
            }
        }
        finally
        {
            await hintThreadStop.CancelAsync().ConfigureAwait(false);
            hintThread?.Join();
            foreach (var channel in channels)
            {
                await channel.DisposeAsync().ConfigureAwait(false);
            }
        }

        report.Timing.TotalMs = _time.GetElapsedTime(start).TotalMilliseconds;
        report.Transfer.BytesOnWire = counters.BytesOnWire;
        report.Transfer.PagesZero = counters.PagesZero;
        report.Transfer.PagesNormal = counters.PagesRaw;
        report.Transfer.PagesCompressed = counters.PagesLz4;
        report.Transfer.ThroughputMBps = counters.BytesOnWire / 1e6 / Math.Max(report.Timing.TotalMs / 1000, 1e-6);
        if (device is not null)
        {
            var stats = device.Stats;
            report.Transfer.PagesSkippedByHints = stats.PagesCleared;
            report.Hints = new MigrationReport.HintsSection
            {
                WaitOnAck = _vm.Config.WaitOnAck,
                CmdIds = stats.CmdIds,
                BlocksReceived = stats.BlocksReceived,
                BlocksApplied = stats.BlocksApplied,
                BlocksDroppedStale = stats.BlocksDroppedStale,
                PagesCleared = stats.PagesCleared,
                DeviceErrors = stats.DeviceErrors,
                DeviceError = stats.Error,
            };
        }

        return report;
    }

    /// <summary>
    /// A dirty-log sync into the migration bitmap, wrapped for hinting (H2): stop hinting before, a new command id
    /// after (or DONE when the VM is stopped). <paramref name="stopBefore"/> and <paramref name="notifyAfter"/> false are
    /// mutants (R2 skips the stop; R9 leaves the final sync unwrapped, so hints keep flowing after it).
    /// </summary>
    private void Sync(PageBitmap bitmap, FreePageHintDevice? device, bool vmRunning, bool stopBefore = true, bool notifyAfter = true)
    {
        var hooks = _options.Hooks;
        if (device is not null && stopBefore)
        {
            device.StopHinting();
            hooks.Preempt();
        }

        using (hooks.Lock(_bitmapLock))
        {
            _vm.DirtyLog.SyncInto(bitmap);
        }

        hooks.Preempt();
        if (notifyAfter)
        {
            device?.AfterSync(vmRunning);
        }

        hooks.Preempt();
    }

    private long Remaining(PageBitmap bitmap)
    {
        using (_options.Hooks.Lock(_bitmapLock))
        {
            return bitmap.Count;
        }
    }

    /// <summary>
    /// Sends every page set in the bitmap, clearing each bit (and, in manual mode, its dirty-log chunk first) before
    /// the page is queued, then waits until all channels have written the round (R11).
    /// </summary>
    private async Task<long> SendRoundAsync(PageBitmap bitmap, DirtyLog log, List<IPageSink> channels, uint round, CancellationToken ct)
    {
        var hooks = _options.Hooks;
        long sent = 0;
        int next = 0;
        long pfn = 0;
        while (true)
        {
            long[] batch = ArrayPool<long>.Shared.Rent(_options.PagesPerBatch);
            int count = 0;
            using (hooks.Lock(_bitmapLock))
            {
                pfn = bitmap.FindNextSet(pfn);
                while (pfn >= 0 && count < _options.PagesPerBatch)
                {
                    // Manual mode: re-arm the chunk before reading any page in it, or writes made since the sync are lost.
                    log.ClearChunkContaining(pfn);
                    bitmap.Clear(pfn);
                    batch[count++] = pfn;
                    pfn = bitmap.FindNextSet(pfn + 1);
                }
            }

            if (count == 0)
            {
                ArrayPool<long>.Shared.Return(batch);
                break;
            }

            await channels[next].EnqueueAsync(new PageWorkItem(batch, count, round), ct).ConfigureAwait(false);
            next = (next + 1) % channels.Count;
            sent += count;
            hooks.Yield();
            if (pfn < 0)
            {
                break;
            }
        }

        if (!hooks.Has(Mutation.OutOfOrderChannels))
        {
            await Task.WhenAll(channels.Select(c => c.BarrierAsync(ct))).ConfigureAwait(false);
        }

        return sent;
    }

    private BeginRequest BeginRequest(string id)
    {
        var request = new BeginRequest
        {
            MigrationId = id,
            RamBytes = (ulong)_vm.Config.RamBytes,
            PageSize = PageGeometry.PageSize,
            Vcpus = (uint)_vm.Config.Vcpus,
            GuestConfigJson = JsonSerializer.Serialize(_vm.Config, WireJson.Default.GuestConfig),
            Channels = (uint)_options.Channels,
        };
        request.Features.Add("round-tags");
        if (_options.Hints)
        {
            request.Features.Add("free-page-hint");
        }

        if (_options.Compress)
        {
            request.Features.Add("lz4");
        }

        return request;
    }

    private MigrationReport NewReport()
    {
        var c = _vm.Config;
        return new MigrationReport
        {
            MigrationId = Guid.NewGuid().ToString("n"),
            Config = new Dictionary<string, object?>
            {
                ["target"] = _options.Target.ToString(),
                ["downtimeLimitMs"] = _options.DowntimeLimit.TotalMilliseconds,
                ["maxBandwidthBytesPerSec"] = _options.MaxBandwidthBytesPerSecond,
                ["channels"] = _options.Channels,
                ["compress"] = _options.Compress ? "lz4" : "none",
                ["dirtyLog"] = c.DirtyLogMode.ToString().ToLowerInvariant(),
                ["poison"] = c.PoisonValue is byte b ? $"0x{b:x2}" : "off",
                ["seed"] = c.Workload.Seed,
                ["maxRounds"] = _options.MaxRounds,
                ["hints"] = _options.Hints ? "on" : "off",
                ["waitOnAck"] = c.WaitOnAck ? "on" : "off",
            },
            Guest = MigrationReport.GuestSection.Of(c),
        };
    }

    private double Lap(ref long since)
    {
        long now = _time.GetTimestamp();
        double ms = _time.GetElapsedTime(since, now).TotalMilliseconds;
        since = now;
        return ms;
    }

    private static string Describe(Exception ex) => ex switch
    {
        RpcException rpc => $"{rpc.StatusCode}: {rpc.Status.Detail}",
        _ => ex.Message,
    };
}

/// <summary>The migration could not complete for a reason the engine states (not converging, target refused).</summary>
public sealed class MigrationFailedException : Exception
{
    public MigrationFailedException(string message)
        : base(message)
    {
    }

    public MigrationFailedException()
    {
    }

    public MigrationFailedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
