using Migration.Protocol;
using Migration.Shared.Transport;

namespace Migration.FaultMatrix.Tests;

/// <summary>The phases of the fault matrix: where in a migration the fault strikes.</summary>
public enum FaultPhase
{
    Begin,
    Setup,
    RoundZero,
    LaterRound,
    StopAndCopy,
    Complete,
    AfterReply,
}

/// <summary>
/// The real transport with named points at the phase boundaries of a migration (Garnet puts fault-injection points at
/// its migration's phase boundaries the same way): just before Begin, during round 0's and a later round's sending,
/// just before Complete leaves and just after its reply arrives. Setup and stop-and-copy are reached through the
/// engine's setup hook and its progress reports.
/// </summary>
internal sealed class PhaseTriggers(IMigrationTransport inner, FaultPhase phase, Action strike) : IMigrationTransport
{
    private int _struck;

    public string? MigrationKey { get; private set; }

    public void Strike(FaultPhase at)
    {
        if (at == phase && Interlocked.Exchange(ref _struck, 1) == 0)
        {
            strike();
        }
    }

    public async Task<BeginReply> BeginAsync(BeginRequest request, CancellationToken ct)
    {
        Strike(FaultPhase.Begin);
        var reply = await inner.BeginAsync(request, ct).ConfigureAwait(false);
        MigrationKey = reply.MigrationKey;
        return reply;
    }

    public Task<long?> PagesReceivedAsync(string migrationId, CancellationToken ct) =>
        inner.PagesReceivedAsync(migrationId, ct);

    public IPageSink OpenChannel(string migrationId, CancellationToken streamToken) =>
        new Sink(inner.OpenChannel(migrationId, streamToken), this);

    public async Task<CompleteReply> CompleteAsync(CompleteRequest request, TimeSpan timeout, CancellationToken ct)
    {
        Strike(FaultPhase.Complete);
        var reply = await inner.CompleteAsync(request, timeout, ct).ConfigureAwait(false);
        if (!reply.Provisional)
        {
            Strike(FaultPhase.AfterReply);
        }

        return reply;
    }

    /// <summary>Resume-first: the definite reply is Confirm's, so "after the reply" strikes here.</summary>
    public async Task<CompleteReply> ConfirmAsync(ConfirmRequest request, TimeSpan timeout, CancellationToken ct)
    {
        var reply = await inner.ConfirmAsync(request, timeout, ct).ConfigureAwait(false);
        Strike(FaultPhase.AfterReply);
        return reply;
    }

    public Task<StatusReply> StatusAsync(string migrationId, TimeSpan timeout, CancellationToken ct) =>
        inner.StatusAsync(migrationId, timeout, ct);

    public Task<TimeSpan> RehearseCompleteAsync(CompleteRequest request, CancellationToken ct) =>
        inner.RehearseCompleteAsync(request, ct);

    public Task<CancelReply?> CancelAsync(string migrationId, string reason) => inner.CancelAsync(migrationId, reason);

    public ValueTask DisposeAsync() => inner.DisposeAsync();

    private sealed class Sink(IPageSink inner, PhaseTriggers owner) : IPageSink
    {
        private int _batches;

        public ValueTask EnqueueAsync(PageWorkItem item, CancellationToken ct)
        {
            // A few batches into the round, so the fault lands with pages in flight.
            if (Interlocked.Increment(ref _batches) > 0 && item.Round == 0 && _batches == 4)
            {
                owner.Strike(FaultPhase.RoundZero);
            }

            if (item.Round == 2)
            {
                owner.Strike(FaultPhase.LaterRound);
            }

            return inner.EnqueueAsync(item, ct);
        }

        public Task BarrierAsync(CancellationToken ct) => inner.BarrierAsync(ct);

        public Task CompleteAsync(CancellationToken ct) => inner.CompleteAsync(ct);

        public Task<TimeSpan> RehearseCloseAsync(CancellationToken ct) => inner.RehearseCloseAsync(ct);

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
