using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Transport;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R26: a delta goes on whichever channel the engine's batch went to, not on the channel that carried its base. The
/// round barrier only waits until the base is written, not applied, so the delta can reach the target first: it then
/// names a copy the target does not hold yet (or holds an older one of).
/// </summary>
public sealed class R26DeltaOnAnotherChannel : Mutant
{
    public override string Race => "R26";

    public override FuzzProfile Profile => FuzzProfile.Deltas;

    internal override IDeltaDefences DeltaDefences(IDeltaDefences defences) => new AnyChannel(defences);

    private sealed class AnyChannel(IDeltaDefences inner) : IDeltaDefences
    {
        public bool WholeSendReplacesCachedCopy => inner.WholeSendReplacesCachedCopy;

        public bool DeltaOnlyOnBaseChannel => false;
    }
}
