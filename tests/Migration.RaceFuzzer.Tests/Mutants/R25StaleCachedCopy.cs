using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Transport;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R25: a page sent whole (a miss because its copy went on another channel, an overflow, a page now zero) leaves its
/// older copy in the delta cache, so a later delta is computed against a copy older than the one the target holds.
/// The target finds a delta naming a round it no longer holds (without the base round on the wire it would decode
/// onto the newer copy and corrupt the page silently, until the digests).
/// </summary>
public sealed class R25StaleCachedCopy : Mutant
{
    public override string Race => "R25";

    public override FuzzProfile Profile => FuzzProfile.Deltas;

    internal override IDeltaDefences DeltaDefences(IDeltaDefences defences) => new KeepsOldCopy(defences);

    private sealed class KeepsOldCopy(IDeltaDefences inner) : IDeltaDefences
    {
        public bool WholeSendReplacesCachedCopy => false;

        public bool DeltaOnlyOnBaseChannel => inner.DeltaOnlyOnBaseChannel;
    }
}
