using System.Diagnostics;
using Migration.Protocol;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Machine;
using Migration.Shared.Verification;

namespace Migration.Target.Receiving;

/// <summary>
/// Turns a received migration into a running guest, or into an error: rebuild the VM from RAM and state, compare the
/// source's page digests, run the guest's self-check, and only then resume. The target's side of the switchover.
/// </summary>
internal interface ISwitchover
{
    /// <summary>
    /// Verifies and, if everything holds, resumes. Returns the reply and the running VM (null unless resumed). Takes
    /// the migration's RAM in every case: on any failure the partial guest is gone.
    /// </summary>
    (CompleteReply Reply, VirtualMachine? Verified) Run(IncomingMigration migration, CompleteRequest request);

    /// <summary>
    /// Resume-first, inside the downtime: the stream and state checks and the rebuild, nothing that reads every page.
    /// Returns the reply (provisional) and the rebuilt VM, not started, with what Confirm needs; or the reply with
    /// the error and null, the migration's RAM released.
    /// </summary>
    (CompleteReply Reply, PendingConfirm? Pending) Prepare(IncomingMigration migration, CompleteRequest request);

    /// <summary>
    /// Resume-first, after the guest resumed: compares the source's digests with those taken as the pages arrived
    /// (reading no guest RAM, which the running guest now changes). Fills <see cref="CompleteReply.Verified"/>.
    /// </summary>
    CompleteReply Confirm(IncomingMigration migration, PendingConfirm pending, ConfirmRequest request);

    /// <summary>
    /// A rehearsal Complete: the state digest computed and dropped, and a scratch guest of the same shape rebuilt and
    /// started (<see cref="RestoreProbe"/>); nothing of the migration changes. Returns the reply with the phases a
    /// real switchover would report, and the running scratch guest, to stop once the reply is out.
    /// </summary>
    (CompleteReply Reply, IDisposable? Running) Rehearse(IncomingMigration migration, CompleteRequest request);
}

/// <summary>
/// A guest resumed before its pages were compared. With <c>--verify full</c> its digests were taken from RAM before it
/// ran (<paramref name="RamDigests"/> over the pages <paramref name="RamFree"/> leaves out); otherwise Confirm builds
/// them from the receive-time digests.
/// </summary>
/// <paramref name="Allocator"/> is the guest's descriptor array as it stood before it ran: what the guest itself said
/// was free, against which the source's free-page map is checked.
internal sealed record PendingConfirm(VirtualMachine Vm, PageBitmap? RamFree, ulong[]? RamDigests,
    DescriptorSnapshot Allocator);

internal sealed class Switchover(TargetOptions options, ILogger<Switchover> log) : ISwitchover
{
    /// <summary>How long a rehearsal waits for the scratch guest being prepared beside Begin.</summary>
    private static readonly TimeSpan ProbeWait = TimeSpan.FromSeconds(10);

    public (CompleteReply Reply, VirtualMachine? Verified) Run(IncomingMigration migration, CompleteRequest request)
    {
        ArgumentNullException.ThrowIfNull(migration);
        ArgumentNullException.ThrowIfNull(request);
        var reply = new CompleteReply();
        var phase = Stopwatch.StartNew();
        if (Rebuild(migration, request, reply, phase) is not { } vm)
        {
            return (reply, null);
        }

        try
        {
            if (Verify(migration, request, vm, reply, phase))
            {
                if (options.DumpRamPath is not null)
                {
                    DumpRam(vm.Ram, options.DumpRamPath);
                    reply.PhasesMs["dumpRam"] = Lap(phase);
                }

                return (reply, vm);
            }
        }
        catch (Exception ex) when (ex is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            reply.Verified = false;
            reply.Error = $"verification failed: {ex.Message}";
        }

        vm.Dispose();
        return (reply, null);
    }

    public (CompleteReply Reply, PendingConfirm? Pending) Prepare(IncomingMigration migration,
        CompleteRequest request)
    {
        ArgumentNullException.ThrowIfNull(migration);
        ArgumentNullException.ThrowIfNull(request);
        var reply = new CompleteReply();
        var phase = Stopwatch.StartNew();
        if (Rebuild(migration, request, reply, phase) is not { } vm)
        {
            return (reply, null);
        }

        try
        {
            // The allocator as the guest left it, copied before it runs (16 bytes a page; the walk comes after the
            // resume): Confirm checks the source's free-page map against it rather than trusting it.
            var allocator = vm.Kernel.SnapshotDescriptors(migration.Allocator);
            reply.PhasesMs["allocator"] = Lap(phase);
            PageBitmap? free = null;
            ulong[]? digests = null;
            if (options.Verify == VerifyMode.Full)
            {
                // A full rehash reads RAM, so it happens before the guest runs, inside the downtime.
                free = vm.Kernel.FreePageMap();
                digests = PageDigests.Compute(vm.Ram, free);
                reply.PhasesMs["hash"] = Lap(phase);
            }

            if (options.DumpRamPath is { } path)
            {
                // The image as received, before the guest changes it; it takes its name only once Confirm verified.
                DumpRam(vm.Ram, UnverifiedDump(path));
                reply.PhasesMs["dumpRam"] = Lap(phase);
            }

            reply.Provisional = true;
            return (reply, new PendingConfirm(vm, free, digests, allocator));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            vm.Dispose();
            reply.Error = $"switchover failed before resume: {ex.Message}";
            return (reply, null);
        }
    }

    /// <summary>Where <c>--dump-ram</c> writes a resume-first image until Confirm decides.</summary>
    private static string UnverifiedDump(string path) => path + ".unverified";

    /// <summary>After Confirm: a verified guest's image takes its name; a discarded one's is deleted.</summary>
    private void SettleDump(bool verified)
    {
        if (options.DumpRamPath is not { } path || !File.Exists(UnverifiedDump(path)))
        {
            return;
        }

        if (verified)
        {
            File.Move(UnverifiedDump(path), path, overwrite: true);
        }
        else
        {
            File.Delete(UnverifiedDump(path));
        }
    }

    public CompleteReply Confirm(IncomingMigration migration, PendingConfirm pending, ConfirmRequest request)
    {
        ArgumentNullException.ThrowIfNull(migration);
        ArgumentNullException.ThrowIfNull(pending);
        ArgumentNullException.ThrowIfNull(request);
        var reply = new CompleteReply();
        var phase = Stopwatch.StartNew();
        long pages = pending.Vm.Ram.PageCount;
        if (PageBitmap.FromBytes(request.FreePages.Span, pages) is not { } sourceFree)
        {
            reply.Error = $"the free-page map has {request.FreePages.Length} bytes; a guest of {pages} pages needs " +
                $"{(pages + 7) >> 3}";
            return reply;
        }

        ulong[] expected;
        try
        {
            expected = PageDigests.FromBytes(request.PageDigests.Span);
        }
        catch (InvalidDataException ex)
        {
            reply.Error = $"verification failed: {ex.Message}";
            return reply;
        }

        // Which pages must match is the guest's own word, not the source's: a map that calls in-use pages free (with
        // their digests left out) would otherwise verify pages nobody compared.
        var free = pending.RamFree ?? pending.Allocator.FreePageMap();
        reply.PhasesMs["freeMap"] = Lap(phase);
        var (disagree, firstDisagreeing) = Disagreement(sourceFree, free);
        var (mismatched, first) = Compare(expected, pending.RamDigests ?? migration.ReceivedDigests(free), free, reply);
        reply.GuestSelfCheck = request.SelfCheck;
        reply.PhasesMs["compare"] = Lap(phase);
        TargetLog.Verified(log, migration.Id, reply.PagesCompared, (long)reply.PhasesMs["compare"], mismatched,
            "source: " + request.SelfCheck);
        long inUse = free.PageCount - free.Count;
        reply.Error = expected.LongLength != (long)request.DigestPages
            ? $"digest list has {expected.LongLength} entries, the source announced {request.DigestPages}"
            : disagree != 0
            ? $"the source's free-page map disagrees with the guest's own allocator at {disagree} page(s) (first: " +
                $"{string.Join(", ", firstDisagreeing)}): {sourceFree.PageCount - sourceFree.Count} in use by the " +
                $"map, {inUse} by the allocator"
            : inUse != expected.LongLength
            ? $"{expected.LongLength} digests for the {inUse} pages the guest's allocator has in use"
            : mismatched != 0
            ? $"{mismatched} page(s) differ from the source (first: {string.Join(", ", first)})"
            : !request.SelfCheckOk
            ? $"guest self-check failed on the stopped source: {request.SelfCheck}"
            : string.Empty;
        reply.Verified = reply.Error.Length == 0;
        SettleDump(reply.Verified);
        return reply;
    }

    /// <summary>Pages on which two free-page maps disagree, and the first few of them.</summary>
    private static (long Count, List<long> First) Disagreement(PageBitmap a, PageBitmap b)
    {
        byte[] x = a.ToBytes(), y = b.ToBytes();
        long count = 0;
        var first = new List<long>();
        for (int i = 0; i < x.Length; i++)
        {
            int diff = x[i] ^ y[i];
            if (diff == 0)
            {
                continue;
            }

            count += System.Numerics.BitOperations.PopCount((uint)diff);
            for (int bit = 0; bit < 8 && first.Count < 8; bit++)
            {
                if ((diff & (1 << bit)) != 0)
                {
                    first.Add(((long)i << 3) + bit);
                }
            }
        }

        return (count, first);
    }

    public (CompleteReply Reply, IDisposable? Running) Rehearse(IncomingMigration migration,
        CompleteRequest request)
    {
        ArgumentNullException.ThrowIfNull(migration);
        ArgumentNullException.ThrowIfNull(request);
        var reply = new CompleteReply();
        var phase = Stopwatch.StartNew();
        try
        {
            _ = CompletionState.Read(migration, request);
        }
        catch (InvalidDataException ex)
        {
            reply.Error = $"device state refused: {ex.Message}"; // the real completion fails on it, with this error
        }

        double digestMs = Lap(phase);
        if (request.ResumeFirst)
        {
            reply.PhasesMs["allocator"] = migration.TimeDescriptorCopy();
            _ = Lap(phase);
        }

        if (migration.AwaitProbe(ProbeWait)?.Start() is not { } run)
        {
            reply.PhasesMs["restore"] = digestMs;
            return (reply, null);
        }

        reply.PhasesMs["restore"] = digestMs + run.RestoreMs;
        reply.PhasesMs["resume"] = run.ResumeMs;
        return (reply, run);
    }

    /// <summary>
    /// The checks that need no page and the rebuild: every stream closed, the state digest, the VM from RAM and state.
    /// Null (the error in the reply, the migration's RAM released) when any fails; otherwise the time since
    /// <paramref name="phase"/> started is the reply's "restore".
    /// </summary>
    private static VirtualMachine? Rebuild(IncomingMigration migration, CompleteRequest request, CompleteReply reply,
        Stopwatch phase)
    {
        if (migration.OpenStreams > 0)
        {
            migration.Dispose();
            reply.Error = $"{migration.OpenStreams} page stream(s) still open at completion";
            return null;
        }

        CompletionState state;
        try
        {
            state = CompletionState.Read(migration, request);
        }
        catch (InvalidDataException ex)
        {
            migration.Dispose();
            reply.Error = $"device state refused: {ex.Message}";
            return null;
        }

        if (state.Digest != request.StateDigest)
        {
            migration.Dispose();
            reply.Error = "the vCPU, device or configuration state differs from what the source sent (state digest " +
                $"0x{state.Digest:x16}, source 0x{request.StateDigest:x16})";
            return null;
        }

        try
        {
            var vm = VirtualMachine.Restore(migration.Config, migration.TakeRam(),
                [.. request.VcpuStates.Select(s => s.ToByteArray())], state.Devices);
            reply.PhasesMs["restore"] = Lap(phase);
            return vm;
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidDataException or EndOfStreamException
            or GuestKernelException)
        {
            migration.Dispose();
            reply.Error = $"guest could not be rebuilt: {ex.Message}";
            return null;
        }
    }

    /// <summary>Digests and self-check; fills the reply; true when the guest may run.</summary>
    private bool Verify(IncomingMigration migration, CompleteRequest request, VirtualMachine vm, CompleteReply reply,
        Stopwatch phase)
    {
        ulong[] expected = PageDigests.FromBytes(request.PageDigests.Span);
        var free = vm.Kernel.FreePageMap();
        ulong[] actual = options.Verify == VerifyMode.Full
            ? PageDigests.Compute(vm.Ram, free)
            : migration.Digests(vm.Ram, free);
        var (mismatched, first) = Compare(expected, actual, free, reply);
        reply.PhasesMs["compare"] = Lap(phase);
        var check = vm.Kernel.SelfCheck();
        reply.GuestSelfCheck = check.ToString();
        reply.PhasesMs["selfCheck"] = Lap(phase);
        TargetLog.Verified(log, migration.Id, reply.PagesCompared,
            (long)(reply.PhasesMs["compare"] + reply.PhasesMs["selfCheck"]), mismatched, reply.GuestSelfCheck);

        if (expected.LongLength != (long)request.DigestPages)
        {
            reply.Error = $"digest list has {expected.LongLength} entries, the source announced {request.DigestPages}";
        }
        else if (mismatched != 0)
        {
            reply.Error = $"{mismatched} page(s) differ from the source (first: {string.Join(", ", first)})";
        }
        else if (!check.Ok)
        {
            reply.Error = $"guest self-check failed: {check}";
        }

        reply.Verified = reply.Error.Length == 0;
        return reply.Verified;
    }

    /// <summary>The source's digests against the target's, the counts and first mismatches into the reply.</summary>
    private static (long Mismatched, List<long> First) Compare(ulong[] expected, ulong[] actual, PageBitmap free,
        CompleteReply reply)
    {
        var (mismatched, first) = PageDigests.Compare(expected, actual, free);
        reply.PagesCompared = (ulong)Math.Max(expected.LongLength, actual.LongLength);
        reply.MismatchedPages = (ulong)mismatched;
        reply.FirstMismatches.AddRange(first.Select(p => (ulong)p));
        return (mismatched, first);
    }

    private static double Lap(Stopwatch phase)
    {
        double ms = phase.Elapsed.TotalMilliseconds;
        phase.Restart();
        return ms;
    }

    private static void DumpRam(GuestRam ram, string path)
    {
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        const int PagesPerWrite = 256;
        for (long p = 0; p < ram.PageCount; p += PagesPerWrite)
        {
            file.Write(ram.Pages(p, (int)Math.Min(PagesPerWrite, ram.PageCount - p)));
        }
    }
}
