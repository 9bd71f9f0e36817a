using System.Diagnostics;
using System.Text;
using Google.Protobuf;
using Migration.Protocol;
using Migration.Shared.Balloon;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;
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
}

internal sealed class Switchover(TargetOptions options, ILogger<Switchover> log) : ISwitchover
{
    public (CompleteReply Reply, VirtualMachine? Verified) Run(IncomingMigration migration, CompleteRequest request)
    {
        ArgumentNullException.ThrowIfNull(migration);
        ArgumentNullException.ThrowIfNull(request);
        var reply = new CompleteReply();
        if (migration.OpenStreams > 0)
        {
            migration.Dispose();
            reply.Error = $"{migration.OpenStreams} page stream(s) still open at completion";
            return (reply, null);
        }

        ulong stateDigest = MigrationStateDigest.Compute(Encoding.UTF8.GetBytes(migration.ConfigJson),
            request.VcpuStates.Select(s => s.Memory), request.Device?.ToByteArray() ?? []);
        if (stateDigest != request.StateDigest)
        {
            migration.Dispose();
            reply.Error = "the vCPU, device or configuration state differs from what the source sent (state digest " +
                $"0x{stateDigest:x16}, source 0x{request.StateDigest:x16})";
            return (reply, null);
        }

        var phase = Stopwatch.StartNew();
        VirtualMachine vm;
        try
        {
            vm = VirtualMachine.Restore(migration.Config, migration.TakeRam(),
                [.. request.VcpuStates.Select(s => s.ToByteArray())], balloon: BalloonStateOf(request.Device));
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidDataException or EndOfStreamException
            or GuestKernelException)
        {
            migration.Dispose();
            reply.Error = $"guest could not be rebuilt: {ex.Message}";
            return (reply, null);
        }

        reply.PhasesMs["restore"] = Lap(phase);
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

    /// <summary>Digests and self-check; fills the reply; true when the guest may run.</summary>
    private bool Verify(IncomingMigration migration, CompleteRequest request, VirtualMachine vm, CompleteReply reply,
        Stopwatch phase)
    {
        ulong[] expected = PageDigests.FromBytes(request.PageDigests.Span);
        var free = vm.Kernel.FreePageMap();
        ulong[] actual = options.Verify == VerifyMode.Full
            ? PageDigests.Compute(vm.Ram, free)
            : migration.Digests(vm.Ram, free);
        var (mismatched, first) = PageDigests.Compare(expected, actual, free);
        reply.PagesCompared = (ulong)Math.Max(expected.LongLength, actual.LongLength);
        reply.MismatchedPages = (ulong)mismatched;
        reply.FirstMismatches.AddRange(first.Select(p => (ulong)p));
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

    private static BalloonState? BalloonStateOf(DeviceState? device) => device is null
        ? null
        : new BalloonState((HintStatus)device.HintStatus, device.HintCmdId, device.PoisonVal, device.Features);

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
