using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Transport;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// One entry of the race catalogue with its defence removed. A mutant changes only seams (the engine's, the guest's,
/// the in-memory target's); production code holds only the correct defence. The fuzzer must catch every mutant within
/// a bounded number of seeds.
/// </summary>
public abstract class Mutant
{
    /// <summary>
    /// Every mutant, in catalogue order (R1..R26; R19, the stats buffer, and R23, a discard during a migration, have
    /// scripted tests).
    /// </summary>
    public static IReadOnlyList<Mutant> All { get; } =
    [
        new R01AcceptStaleIds(),
        new R02SkipStopBeforeSync(),
        new R03HintBeforeLogging(),
        new R04HintClearsWriteLog(),
        new R05ManualWithoutWaitOnAck(),
        new R06HintWithoutChunkClear(),
        new R07MarkBeforeStore(),
        new R08NonAtomicSync(),
        new R09ApplyWhileStopped(),
        new R10HonourReplayedStart(),
        new R11OutOfOrderChannels(),
        new R12ReleaseWithoutPoison(),
        new R13TouchBeforeInflateAck(),
        new R14DeflateBeforeInflateAck(),
        new R15SkipDeflatedRange(),
        new R16SaveWithoutDrain(),
        new R17SkipBeforeDrain(),
        new R18DropPartlyHeldDeflate(),
        new R20ReuseBeforeReportAck(),
        new R21DiscardPoisoned(),
        new R22SkipReusedDiscard(),
        new R24ThrottleInsideStore(),
        new R25StaleCachedCopy(),
        new R26DeltaOnAnotherChannel(),
    ];

    /// <summary>The race's id in the catalogue (R1..R26).</summary>
    public abstract string Race { get; }

    /// <summary>The guest and device configuration the mutant is fuzzed in (where its race can happen).</summary>
    public abstract FuzzProfile Profile { get; }

    /// <summary>The source guest's seams, and the target guest's (R12 breaks both drivers).</summary>
    internal virtual GuestSeams Guest(GuestSeams seams) => seams;

    internal virtual EngineSeams Engine(EngineSeams seams) => seams;

    /// <summary>R5: the engine is allowed what it refuses (manual mode without wait-on-ack).</summary>
    public virtual bool AllowUnsafe => false;

    /// <summary>R25, R26: the delta encoder's rules (the Deltas profile's channels encode through them).</summary>
    internal virtual IDeltaDefences DeltaDefences(IDeltaDefences defences) => defences;

    /// <summary>R11: the engine's per-round barrier and the target's round tags.</summary>
    public virtual bool OrdersChannels => true;

    /// <summary>The mutant's type name without its race prefix: what defence it removes.</summary>
    public override string ToString() => $"{Race} {GetType().Name[3..]}";
}
