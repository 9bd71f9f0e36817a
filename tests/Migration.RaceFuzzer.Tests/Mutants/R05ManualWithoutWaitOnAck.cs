using Migration.RaceFuzzer.Tests.Harness;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R5: manual dirty-log mode with hints but without wait-on-ack, which the engine refuses (this mutant allows it).
/// A block reused before the device processed it is written while un-armed; the hint's chunk clear wipes the log bit.
/// </summary>
public sealed class R05ManualWithoutWaitOnAck : Mutant
{
    public override string Race => "R5";

    public override FuzzProfile Profile => FuzzProfile.ManualNoAck;

    public override bool AllowUnsafe => true;
}
