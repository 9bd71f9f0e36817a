namespace Migration.Shared.Balloon;

/// <summary>
/// The ordering rules of inflate and deflate (B1-B5 in the README) as switches, so the race fuzzer can remove one at a
/// time and show it is caught. Production uses <see cref="Standard"/>, where every rule holds; nothing else is ever
/// built outside the tests.
/// </summary>
internal sealed record BalloonRules
{
    public static readonly BalloonRules Standard = new();

    /// <summary>B1: the driver never gives back pages whose inflate the device has not used (R13 breaks it).</summary>
    public bool DriverWaitsForInflateAck { get; init; } = true;

    /// <summary>B2: the driver deflates only pages whose inflate the device has used (R14 breaks it).</summary>
    public bool DriverDeflatesOnlyAcked { get; init; } = true;

    /// <summary>
    /// B3: ballooned pages leave the migration bitmap once, at setup (and as each inflate is applied); a page deflated
    /// later is logged when written and sent (R15 clears the setup snapshot again at every sync).
    /// </summary>
    public bool DeviceSkipsBalloonOnce { get; init; } = true;

    /// <summary>
    /// B4: before the device state is saved, the device uses every queued deflate, so the held ranges that travel
    /// exclude pages the guest already took back (R16 saves without draining: the target discards guest pages).
    /// </summary>
    public bool DeviceDrainsBeforeSave { get; init; } = true;

    /// <summary>
    /// B5: at setup the device uses every queued deflate before it clears ballooned pages from the bitmap (R17 clears
    /// first: a page the guest took back and wrote before logging began is never sent).
    /// </summary>
    public bool DeviceDrainsBeforeSetupSkip { get; init; } = true;

    /// <summary>
    /// B6: a deflate naming some pages the balloon does not hold still returns the ones it does (R18 drops the whole
    /// request, so pages the guest already reuses stay marked as discarded and the target discards them).
    /// </summary>
    public bool DeviceReturnsHeldPartOfDeflate { get; init; } = true;
}
