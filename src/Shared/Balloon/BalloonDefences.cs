namespace Migration.Shared.Balloon;

/// <summary>
/// The decisions of inflate and deflate that the race catalogue is about (B1-B6 in the README), as a seam, in the
/// way <see cref="IHintDefences"/> is for hinting. Production uses <see cref="StandardBalloonDefences"/>, which holds
/// only the correct rule; the race fuzzer's mutants (R13-R18) wrap it and take one rule out each, built from the
/// steps below.
/// </summary>
internal interface IBalloonDefences
{
    /// <summary>B5, B3: a migration is set up; returns the pages skipped. Called under the device lock.</summary>
    long AtSetup(IBalloonDeviceSteps device);

    /// <summary>B3: after each dirty-log sync of a migration. Called under the device lock.</summary>
    void AfterSync(IBalloonDeviceSteps device);

    /// <summary>B4: the VM is paused and the device state is about to be saved. Called under the device lock.</summary>
    void BeforeSave(IBalloonDeviceSteps device);

    /// <summary>
    /// B6: which ranges of a deflate go back, given how many pages of each the balloon holds (the device clears and
    /// hands back those, and records the ranges not wholly held as a device error).
    /// </summary>
    IEnumerable<PageRange> Returned(IReadOnlyList<PageRange> named, Func<PageRange, long> heldIn);

    /// <summary>B2: the driver has queued an inflate.</summary>
    void Queued(IInflateRequest inflate);

    /// <summary>B1: the device has not used the inflate yet; <paramref name="targetFell"/> when it is no longer wanted.</summary>
    void Unused(IInflateRequest inflate, bool targetFell);

    /// <summary>R19: a restored guest's driver queues its stats buffer again (the target's device never had it).</summary>
    bool RequeueStatsOnRestore { get; }

    /// <summary>
    /// R20: the reporting driver gives a reported block back to the allocator only once the device used the report
    /// (the discard comes with the use, so a block reused earlier would lose its new contents).
    /// </summary>
    bool ReturnsReportedAfterAck { get; }

    /// <summary>
    /// R21: whether the host may discard reported pages of a guest with this poison value (0 when the guest does not
    /// poison): a discard leaves zeros, which only a zero poison value expects.
    /// </summary>
    bool MayDiscardReported(uint poisonVal);

    /// <summary>
    /// R22: a migration skips a discarded page only while the host still backs nothing there (the guest may have
    /// allocated and written the block since it was reported).
    /// </summary>
    bool SkipsOnlyUnbackedDiscards { get; }

    /// <summary>
    /// R23: a discard during a migration is logged as a write of zeros (the target may hold an earlier round's copy of
    /// those pages, which a later allocation that does not write them all would read there).
    /// </summary>
    bool LogsDiscardsDuringMigration { get; }
}

/// <summary>What the device offers its defences (all under the device lock).</summary>
internal interface IBalloonDeviceSteps
{
    /// <summary>Uses every queued buffer.</summary>
    void UseQueued();

    /// <summary>The pages the balloon holds now, as ranges.</summary>
    List<PageRange> Held();

    /// <summary>Clears <paramref name="ranges"/> from the migration's bitmap (if it skips the balloon).</summary>
    long Skip(IEnumerable<PageRange> ranges);
}

/// <summary>An inflate the driver has queued.</summary>
internal interface IInflateRequest
{
    /// <summary>The device used it: its pages are the balloon's and count in <c>actual</c>.</summary>
    void Acknowledge();

    /// <summary>It will not be the balloon's: its pages go back to the allocator (a buffer the queue refused).</summary>
    void Abandon();
}

/// <summary>The inflate/deflate rules as the README states them.</summary>
internal sealed class StandardBalloonDefences : IBalloonDefences
{
    public static readonly StandardBalloonDefences Instance = new();

    /// <inheritdoc/>
    /// <remarks>
    /// What is queued first (B5: a deflate queued before logging began names pages the guest may have written), then
    /// the held pages, once (B3): a page deflated later is logged when the guest writes it.
    /// </remarks>
    public long AtSetup(IBalloonDeviceSteps device)
    {
        ArgumentNullException.ThrowIfNull(device);
        device.UseQueued();
        return device.Skip(device.Held());
    }

    public void AfterSync(IBalloonDeviceSteps device)
    {
    }

    /// <inheritdoc/>
    /// <remarks>B4: the held ranges that travel are exactly what the balloon holds once every queued buffer is used.</remarks>
    public void BeforeSave(IBalloonDeviceSteps device)
    {
        ArgumentNullException.ThrowIfNull(device);
        device.UseQueued();
    }

    /// <inheritdoc/>
    /// <remarks>
    /// B6: every range of which the balloon holds anything. Without MUST_TELL_HOST the guest may already reuse every
    /// page it names, so keeping a held page because its neighbour is not held would leave a guest page marked
    /// discarded.
    /// </remarks>
    public IEnumerable<PageRange> Returned(IReadOnlyList<PageRange> named, Func<PageRange, long> heldIn)
    {
        ArgumentNullException.ThrowIfNull(named);
        ArgumentNullException.ThrowIfNull(heldIn);
        return named.Where(r => heldIn(r) > 0);
    }

    /// <inheritdoc/>
    /// <remarks>B2: the pages count, and may be deflated, only once the device used the buffer.</remarks>
    public void Queued(IInflateRequest inflate)
    {
    }

    /// <inheritdoc/>
    /// <remarks>B1: the driver waits, even when the target fell: the device may still discard those pages.</remarks>
    public void Unused(IInflateRequest inflate, bool targetFell)
    {
    }

    /// <inheritdoc/>
    public bool RequeueStatsOnRestore => true;

    /// <inheritdoc/>
    public bool ReturnsReportedAfterAck => true;

    /// <inheritdoc/>
    /// <remarks>QEMU's rule: no discard when <c>poison_val</c> is not zero.</remarks>
    public bool MayDiscardReported(uint poisonVal) => poisonVal == 0;

    /// <inheritdoc/>
    public bool SkipsOnlyUnbackedDiscards => true;

    /// <inheritdoc/>
    public bool LogsDiscardsDuringMigration => true;
}
