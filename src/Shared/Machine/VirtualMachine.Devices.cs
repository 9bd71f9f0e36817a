using Migration.Shared.Balloon;
using Migration.Shared.Devices;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Machine;

/// <summary>
/// The machine's device state: each device's section saved on the source and read back on the target. This is the
/// one place that knows which device owns which section id; the engine, the transport and the target carry the
/// sections without looking inside.
/// </summary>
public sealed partial class VirtualMachine
{
    /// <summary>The ids of the sections this machine writes and needs back, one per migratable device.</summary>
    public static IReadOnlyList<string> DeviceSectionIds { get; } = [BalloonSection.Id];

    /// <summary>
    /// Every device's section, in <see cref="DeviceSectionIds"/> order (only while paused or never started: a running
    /// guest's devices move on).
    /// </summary>
    public IReadOnlyList<DeviceSection> SaveDevices() => [BalloonSection.Save(SaveDeviceState())];

    /// <summary>The balloon's state, as its section carries it (tests look at it directly).</summary>
    internal BalloonState SaveDeviceState()
    {
        var (status, id) = HintDevice.SavedState;
        return new BalloonState(status, id, HintDevice.PoisonVal, HintDevice.FeatureBits)
        {
            TargetPages = Balloon.TargetPages,
            ActualPages = Balloon.ActualPages,
            StatsPollingSeconds = Balloon.GuestStats.PollingIntervalSeconds,
            Held = Balloon.HeldRanges(),
            Discarded = Balloon.DiscardedRanges(),
        };
    }

    /// <summary>
    /// Reads every section into its device's state and checks it against the configuration, before anything is built.
    /// </summary>
    private static BalloonState ReadSections(GuestConfig config, IReadOnlyList<DeviceSection> sections)
    {
        BalloonState? balloon = null;
        foreach (var section in sections)
        {
            ArgumentNullException.ThrowIfNull(section);
            switch (section.Id)
            {
                case BalloonSection.Id when balloon is null:
                    balloon = BalloonSection.Load(section, config.PageCount);
                    break;
                case BalloonSection.Id:
                    throw section.Refused("the section appears twice");
                default:
                    throw section.Refused(
                        $"no device of this machine owns it (its devices: {string.Join(", ", DeviceSectionIds)})");
            }
        }

        if (balloon is null)
        {
            throw new InvalidDataException($"device section '{BalloonSection.Id}' is missing: every device of the " +
                "machine needs its state");
        }

        try
        {
            CheckBalloonState(config, balloon);
        }
        catch (InvalidDataException ex)
        {
            throw new DeviceSection(BalloonSection.Id, BalloonSection.Version, default).Refused(ex.Message);
        }

        return balloon;
    }

    private static ulong NegotiatedBalloonFeatures(GuestConfig config) =>
        config.Balloon.Features
        | BalloonFeatureBits.FreePageHint
        | (config.PoisonValue is null ? 0 : BalloonFeatureBits.PagePoison)
        | (config.WaitOnAck ? BalloonFeatureBits.HintWaitOnAck : 0);

    /// <summary>
    /// The negotiated values are the configuration's; a state that disagrees was not made for this guest.
    /// </summary>
    private static void CheckBalloonState(GuestConfig config, BalloonState state)
    {
        if (state.Features != NegotiatedBalloonFeatures(config) || state.PoisonVal != (config.PoisonValue ?? 0u))
        {
            throw new InvalidDataException(
                $"balloon state (features 0x{state.Features:x}, poison 0x{state.PoisonVal:x}) " +
                "does not match the guest configuration " +
                $"(features 0x{NegotiatedBalloonFeatures(config):x}, poison 0x{config.PoisonValue ?? 0:x})");
        }

        if (state.TargetPages < 0 || state.TargetPages > config.PageCount || state.ActualPages < 0
            || state.ActualPages > config.PageCount)
        {
            throw new InvalidDataException(
                $"balloon state has target {state.TargetPages} and actual {state.ActualPages} pages; the guest has " +
                $"{config.PageCount}");
        }

        if (state.HintStatus != HintStatus.Done)
        {
            throw new InvalidDataException(
                $"balloon state has hint status {(uint)state.HintStatus}; a hint run is over (DONE) at switchover");
        }

        if (state.HintCommandId < HintCommandId.Min)
        {
            throw new InvalidDataException(
                $"balloon state has command id 0x{state.HintCommandId:x}, below the id range");
        }
    }

    /// <summary>
    /// A held page is discarded on arrival; it must be the balloon's in the guest's own descriptors, or the discard would
    /// wipe memory the guest owns (a device state that disagrees with the RAM it travelled with).
    /// </summary>
    private static void CheckHeldPages(GuestKernel kernel, IReadOnlyList<PageRange> held)
    {
        if (held.Count == 0)
        {
            return;
        }

        var balloon = new PageBitmap(kernel.Layout.PageCount);
        foreach (var (pfn, order) in kernel.BlocksWithOrderOwnedBy(PageOwner.BalloonInflated))
        {
            balloon.SetRange(pfn, Math.Min(1L << order, balloon.PageCount - pfn));
        }

        foreach (var r in held)
        {
            if (r.First < 0 || r.Count <= 0 || r.First > balloon.PageCount - r.Count)
            {
                throw new InvalidDataException($"balloon held range {r} is outside guest RAM");
            }

            long owned = r.Count - balloon.CountRange(r.First, r.Count);
            if (owned != 0)
            {
                throw new InvalidDataException(
                    $"balloon state holds {r}, but {owned} of its pages (first: {balloon.FindNextClear(r.First)}) " +
                    "are the guest's, not the " +
                    "balloon's: discarding them would lose guest memory");
            }
        }
    }
}
