using Migration.Shared.DirtyTracking;

namespace Migration.Shared.Balloon;

/// <summary>
/// The decisions of the hint device that the race catalogue is about (H3, H4, H5), as a seam. Production uses
/// <see cref="StandardHintDefences"/>, which holds only the correct rule; the race fuzzer's mutants wrap it and remove
/// one defence each.
/// </summary>
internal interface IHintDefences
{
    /// <summary>H3: whether a buffer's id names the current run.</summary>
    bool IsCurrentRun(uint bufferId, uint currentId);

    /// <summary>The status after an event (<see cref="HintStateMachine.Next"/>).</summary>
    HintStatus Next(HintStatus status, HintEvent e);

    /// <summary>H5: whether the hint thread processes buffers while the VM is stopped.</summary>
    bool ProcessesWhileStopped { get; }

    /// <summary>H4: clears a hinted block from the migration bitmap; returns the bits cleared.</summary>
    long Apply(MigrationBitmap bitmap, long firstPfn, long pages);
}

/// <summary>The hint protocol's defences as the README's rules state them.</summary>
internal sealed class StandardHintDefences : IHintDefences
{
    public static readonly StandardHintDefences Instance = new();

    /// <inheritdoc/>
    /// <remarks>Only the id issued last counts: a late START or block from an older run is stale (R1).</remarks>
    public bool IsCurrentRun(uint bufferId, uint currentId) => bufferId == currentId;

    public HintStatus Next(HintStatus status, HintEvent e) => HintStateMachine.Next(status, e);

    /// <inheritdoc/>
    /// <remarks>While the VM is stopped the final sync has run or is about to: a hint applied now could clear a page
    /// the guest wrote before it stopped (R9).</remarks>
    public bool ProcessesWhileStopped => false;

    /// <inheritdoc/>
    /// <remarks>
    /// <see cref="MigrationBitmap.Skip"/>: under the bitmap lock, manual mode re-arming the chunks first (R6), the write
    /// log untouched (R4).
    /// </remarks>
    public long Apply(MigrationBitmap bitmap, long firstPfn, long pages)
    {
        ArgumentNullException.ThrowIfNull(bitmap);
        return bitmap.Skip(firstPfn, pages);
    }
}
