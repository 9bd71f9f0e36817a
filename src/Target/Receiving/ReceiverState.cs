using Migration.Shared.Machine;
using Migration.Shared.Protocol;

namespace Migration.Target.Receiving;

/// <summary>
/// Where the target's receiving controller (<see cref="IncomingMigrations"/>) stands, one type per state, each holding
/// exactly what that state owns. <see cref="Wire"/> is what a client sees (<see cref="TargetState"/>): several states
/// share a wire state (a guest running but not yet confirmed is "verifying"; one stopped after <c>--run-after</c> is
/// still "resumed"). <see cref="Check"/> is the transition rule; the controller moves only through it.
/// </summary>
internal abstract record ReceiverState
{
    private ReceiverState()
    {
    }

    /// <summary>The state a Status reply carries.</summary>
    public abstract TargetState Wire { get; }

    /// <summary>The migration this state is about, while one is in flight (receiving or verifying).</summary>
    public virtual IncomingMigration? InFlight => null;

    /// <summary>The id a state change is logged under: the in-flight or resumed migration's.</summary>
    public virtual string? MigrationId => InFlight?.Id;

    /// <summary>Throws unless the rule allows moving from <paramref name="from"/> to <paramref name="next"/>.</summary>
    public static void Check(ReceiverState from, ReceiverState next)
    {
        ArgumentNullException.ThrowIfNull(from);
        ArgumentNullException.ThrowIfNull(next);
        if (!Allows(from, next))
        {
            throw new InvalidOperationException(
                $"the target cannot move from {from.GetType().Name} to {next.GetType().Name}");
        }
    }

    /// <summary>
    /// The transition rule: idle or failed -> receiving -> verifying -> resumed (-> stopping) -> idle, or -> failed
    /// from receiving or verifying; resume-first goes verifying -> awaiting confirm -> verifying while Confirm (or a
    /// Cancel, or the lease) decides. A step within a migration keeps its migration (or guest). Anything may close.
    /// </summary>
    public static bool Allows(ReceiverState from, ReceiverState next) => (from, next) switch
    {
        (Closed, _) => false,
        (_, Closed) => true,
        (Idle or Failed, Receiving) => true,
        (Receiving r, Verifying v) => ReferenceEquals(r.Migration, v.Migration),
        (Receiving or Verifying, Failed) => true,
        (Verifying v, AwaitingConfirm a) => ReferenceEquals(v.Migration, a.Migration),
        (Verifying v, Resumed r) => string.Equals(v.Migration.Id, r.Id, StringComparison.Ordinal),
        (AwaitingConfirm a, Verifying v) => ReferenceEquals(a.Migration, v.Migration),
        (Resumed r, Stopping s) => ReferenceEquals(r.Vm, s.Vm),
        (Resumed or Stopping, Idle) => true,
        _ => false,
    };

    /// <summary>No migration yet, or the last guest left (stopped after <c>--run-after</c>, or migrated onward).</summary>
    public sealed record Idle : ReceiverState
    {
        public override TargetState Wire => TargetState.Idle;
    }

    /// <summary>Begin accepted; pages arrive into <paramref name="Migration"/>.</summary>
    public sealed record Receiving(IncomingMigration Migration) : ReceiverState
    {
        public override TargetState Wire => TargetState.Receiving;

        public override IncomingMigration InFlight => Migration;
    }

    /// <summary>
    /// A Complete (or a Confirm, a Cancel or the lease, having taken a guest awaiting confirm) decides; nothing else
    /// may touch the migration meanwhile.
    /// </summary>
    public sealed record Verifying(IncomingMigration Migration) : ReceiverState
    {
        public override TargetState Wire => TargetState.Verifying;

        public override IncomingMigration InFlight => Migration;
    }

    /// <summary>
    /// Resume-first: the guest (<see cref="PendingConfirm.Vm"/>) runs with its outputs held since
    /// <paramref name="ResumedAt"/> (a timestamp of the controller's clock), until Confirm, a Cancel or the lease.
    /// </summary>
    public sealed record AwaitingConfirm(IncomingMigration Migration, PendingConfirm Pending, long ResumedAt)
        : ReceiverState
    {
        public override TargetState Wire => TargetState.Verifying;

        public override IncomingMigration InFlight => Migration;
    }

    /// <summary>The verified guest runs here and is served (management API, onward migration).</summary>
    public sealed record Resumed(string Id, VirtualMachine Vm) : ReceiverState
    {
        public override TargetState Wire => TargetState.Resumed;

        public override string MigrationId => Id;
    }

    /// <summary>
    /// The guest's <c>--run-after</c> time ran out: no longer served, it is being stopped and checked, and a Begin is
    /// still told a guest runs here.
    /// </summary>
    public sealed record Stopping(string Id, VirtualMachine Vm) : ReceiverState
    {
        public override TargetState Wire => TargetState.Resumed;

        public override string MigrationId => Id;
    }

    /// <summary>The last migration was discarded, for <paramref name="Why"/>.</summary>
    public sealed record Failed(string Why) : ReceiverState
    {
        public override TargetState Wire => TargetState.Failed;
    }

    /// <summary>The controller was disposed; a client still sees the state it had (<paramref name="Was"/>).</summary>
    public sealed record Closed(TargetState Was) : ReceiverState
    {
        public override TargetState Wire => Was;
    }
}
