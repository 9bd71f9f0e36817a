using System.Text;
using Google.Protobuf;
using Migration.Protocol;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Transport;
using Migration.Shared.Verification;

namespace Migration.Shared.Precopy;

internal sealed partial class MigrationAttempt
{
    /// <summary>
    /// The guest stops: pausing it also blocks the hint thread (H5); the final sync is wrapped like every other and
    /// ends hinting with DONE because the VM is not running (H2). Then the last pages go out while the page digests are
    /// computed beside them (RAM is frozen now), the streams close, and the completion carries device and vCPU state
    /// and the digests. Returns the completion to hand over.
    /// </summary>
    private async Task<CompleteRequest> StopAndCopyAsync(CancellationToken ct)
    {
        CheckDigestsFit();
        var timer = _downtime = new PhaseTimer(_time, _report.Timing.DowntimePhasesMs);
        _downtimeStart = timer.Started;
        _vm.Pause();
        _paused = true;
        timer.Next("pause");
        uint finalRound = (uint)_report.RoundCount;
        Report((int)finalRound, _report.Timing.ExpectedDowntimeMs);

        long finalStart = _time.GetTimestamp();
        _sync!.Run(vmRunning: false);
        timer.Next("finalSync");
        long finalDirty = _bitmap.Remaining;
        long bytesBefore = _counters.BytesOnWire;

        // Digests of every page the guest does not consider free, from RAM after the stop: a write the dirty log
        // missed (the bugs the check is for) then shows as a mismatch on the target. Resume-first takes them after
        // the target resumed (ConfirmAsync); otherwise now, beside the last pages.
        Task<(PageBitmap Free, ulong[] Digests)>? digests = _resumeFirst ? null : _seams.Background.Run(() =>
        {
            var free = _vm.Kernel.FreePageMap();
            return (free, PageDigests.Compute(_vm.Ram, free));
        }, ct);
        long finalSent = await SendRoundAsync(finalRound, ct).ConfigureAwait(false);
        _stall.Arm("closing the page streams");
        foreach (var channel in _channels)
        {
            await channel.CompleteAsync(ct).ConfigureAwait(false);
        }

        _stall.Disarm();

        foreach (var participant in _joined)
        {
            participant.Complete();
        }

        timer.Next("finalSend");
        _report.AddRound((int)finalRound, finalDirty, finalSent, _counters.BytesOnWire - bytesBefore,
            _time.GetElapsedTime(finalStart).TotalMilliseconds, 0, final: true);
        _metrics.Rounds.Add(1);
        _metrics.PagesRemaining.Record(0);
        var completion = BuildCompletion(finalRound, rehearsal: false);
        timer.Next("saveState");
        if (digests is not null)
        {
            var (free, pageDigests) = await digests.ConfigureAwait(false);
            RecordFreePages(free);
            completion.PageDigests = UnsafeByteOperations.UnsafeWrap(PageDigests.ToBytes(pageDigests));
            completion.DigestPages = (ulong)pageDigests.LongLength;
            timer.Next("sourceDigests"); // what hashing added beyond the final send
        }

        return completion;
    }

    /// <summary>
    /// The completion: vCPU state, every device's section, and the digest over them and the configuration. A
    /// rehearsal's carries the running guest's device sections and placeholder vCPU states (saving those needs the guest paused); the target
    /// digests and drops it, so it costs what the real one costs without changing anything.
    /// </summary>
    private CompleteRequest BuildCompletion(uint finalRound, bool rehearsal)
    {
        var completion = new CompleteRequest
        {
            MigrationId = _id,
            FinalRound = finalRound,
            PagesSent = (ulong)_counters.PagesSent,
            ResumeFirst = _resumeFirst,
            Rehearsal = rehearsal,
        };
        var vcpus = rehearsal
            ? Enumerable.Range(0, _vm.Config.Vcpus).Select(_ => new byte[64]).ToArray()
            : _vm.SaveVcpuStates();
        completion.VcpuStates.AddRange(vcpus.Select(s => ByteString.CopyFrom(s)));
        var devices = _vm.SaveDevices();
        completion.DeviceSections.AddRange(devices.Select(DeviceSectionWire.ToWire));
        completion.StateDigest = MigrationStateDigest.Compute(Encoding.UTF8.GetBytes(_configJson),
            completion.VcpuStates.Select(s => s.Memory), devices);
        return completion;
    }

    /// <summary>
    /// Resume-first's second half, the target's guest running with its outputs held: the digests and the self-check
    /// of this guest, stopped since the pause (its RAM is exactly what was migrated).
    /// </summary>
    private ConfirmRequest BuildConfirmation(out PhaseTimer timer)
    {
        timer = new PhaseTimer(_time, _report.Timing.AfterResumePhasesMs);
        var free = _vm.Kernel.FreePageMap();
        RecordFreePages(free);
        timer.Next("freeMap");
        ulong[] pageDigests = PageDigests.Compute(_vm.Ram, free);
        timer.Next("digests");
        var check = _vm.Kernel.SelfCheck();
        timer.Next("selfCheck");
        return new ConfirmRequest
        {
            MigrationId = _id,
            PageDigests = UnsafeByteOperations.UnsafeWrap(PageDigests.ToBytes(pageDigests)),
            DigestPages = (ulong)pageDigests.LongLength,
            FreePages = UnsafeByteOperations.UnsafeWrap(free.ToBytes()),
            SelfCheckOk = check.Ok,
            SelfCheck = check.ToString(),
        };
    }

    /// <summary>
    /// Before the guest stops: the digest list (8 bytes per page in use) and, resume-first, the free-page map (a bit a
    /// page) travel in one control message, which the target limits. A guest that cannot fit fails here, while it
    /// still runs, rather than after the pause. (The in-use count may grow a little until the stop; 1 MiB of slack.)
    /// </summary>
    private void CheckDigestsFit()
    {
        long pages = _vm.Ram.PageCount;
        long inUse = pages - _vm.Kernel.FreePages;
        long bytes = (inUse * 8) + (_resumeFirst ? (pages + 7) / 8 : 0) + (1 << 20);
        if (_maxMessageBytes > 0 && bytes > _maxMessageBytes)
        {
            throw new MigrationFailedException(FailureKind.TargetRefused,
                $"the guest has {inUse} pages in use: their digests ({bytes >> 20} MiB with the free-page map) " +
                $"exceed the target's {_maxMessageBytes >> 20} MiB message limit; digests in chunks are not " +
                "supported yet");
        }
    }

    private void RecordFreePages(PageBitmap free)
    {
        _report.Report.Guest.FreePages = free.Count;
        _report.Report.Guest.InUsePages = _vm.Ram.PageCount - free.Count;
    }
}
