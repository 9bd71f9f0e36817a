namespace Migration.Target.Receiving;

/// <summary>
/// The lease a source holds on its migration: a receiving migration whose source does nothing for
/// <see cref="Lease"/> (no call, no batch, no stream opened or closed), or a guest resumed first whose Confirm does
/// not come within it, is abandoned. Owns the periodic check's timer, made by the injected clock (a test's fake clock
/// fires it as it advances); what an expiry does is the controller's (<see cref="IncomingMigrations.ExpireLeases"/>).
/// </summary>
internal sealed class Leases : IDisposable
{
    private readonly ITimer _timer;

    /// <param name="lease">How long a source may stay quiet.</param>
    /// <param name="time">The clock migrations measure their quiet on; the timer is made from it too.</param>
    /// <param name="expire">The check, run every <see cref="CheckPeriod"/>.</param>
    public Leases(TimeSpan lease, TimeProvider time, Action expire)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(expire);
        Lease = lease;
        var period = CheckPeriod(lease);
        _timer = time.CreateTimer(_ => expire(), null, period, period);
    }

    public TimeSpan Lease { get; }

    /// <summary>How often the leases are checked: a quarter of the lease, from 50 ms to 1 s.</summary>
    public static TimeSpan CheckPeriod(TimeSpan lease) =>
        TimeSpan.FromSeconds(Math.Clamp(lease.TotalSeconds / 4, 0.05, 1));

    /// <summary>Whether the migration's source has been quiet for longer than the lease.</summary>
    public bool Expired(IncomingMigration migration)
    {
        ArgumentNullException.ThrowIfNull(migration);
        return migration.Idle > Lease;
    }

    /// <summary>Why a receiving migration was discarded.</summary>
    public string QuietSource =>
        $"abandoned: the source did nothing for this migration for {Lease.TotalSeconds:F0} s " +
        "(no call, no page batch, no stream opened or closed)";

    /// <summary>Why a guest resumed first was discarded.</summary>
    public string NoConfirm =>
        "abandoned: the guest ran here with its outputs held, and the source sent no Confirm for " +
        $"{Lease.TotalSeconds:F0} s; this copy is discarded";

    public void Dispose() => _timer.Dispose();
}
