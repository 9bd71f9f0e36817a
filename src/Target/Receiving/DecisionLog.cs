using Migration.Protocol;

namespace Migration.Target.Receiving;

/// <summary>
/// What the target decided for each recent migration (resumed or discarded), written down before the decision is acted
/// on, so a source that lost a reply can ask (Status by id and key) and learn for certain whether its guest runs here.
/// Keeps the last <see cref="Capacity"/>; an id once decided cannot begin again while it is kept. Not thread-safe:
/// <see cref="IncomingMigrations"/> calls it under its lock.
/// </summary>
internal sealed class DecisionLog
{
    /// <summary>Decisions of this many past migrations stay queryable.</summary>
    public const int Capacity = 64;

    private readonly Dictionary<string, Decision> _decisions = new(StringComparer.Ordinal);
    private readonly Queue<string> _order = new();

    /// <summary>Whether a migration with this id was decided here (and is still remembered).</summary>
    public bool Contains(string migrationId) => _decisions.ContainsKey(migrationId);

    /// <summary>Writes a migration's decision down; false if it was already written (the first one stands).</summary>
    public bool Remember(IncomingMigration migration, MigrationOutcome outcome, string? error)
    {
        ArgumentNullException.ThrowIfNull(migration);
        if (!_decisions.TryAdd(migration.Id, new Decision(migration.Owner, outcome, error)))
        {
            return false;
        }

        _order.Enqueue(migration.Id);
        while (_order.Count > Capacity)
        {
            _decisions.Remove(_order.Dequeue());
        }

        return true;
    }

    /// <summary>The decision for a migration, told only to its owner; otherwise unknown.</summary>
    public MigrationOutcome OutcomeOf(string migrationId, CallerCredentials caller) =>
        _decisions.TryGetValue(migrationId, out var decision) && decision.Owner.Admits(caller)
            ? decision.Outcome
            : MigrationOutcome.Unknown;

    /// <summary>Why a decided migration was discarded (empty if it was not, or is not remembered).</summary>
    public string ErrorOf(string migrationId) =>
        _decisions.TryGetValue(migrationId, out var decision) ? decision.Error ?? string.Empty : string.Empty;

    private sealed record Decision(MigrationOwner Owner, MigrationOutcome Outcome, string? Error);
}
