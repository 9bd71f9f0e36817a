using Migration.Protocol;
using Migration.Shared.Guest;

namespace Migration.Shared.Transport;

/// <summary>
/// How the engine reaches a target: the control calls and one page sink per channel. Production uses
/// <see cref="GrpcMigrationTransport"/>; the race fuzzer plugs in an in-memory target driven by its scheduler.
/// After <see cref="BeginAsync"/> the transport carries the migration's key on every call about it. Whatever the target
/// or the connection does, a call fails with a <see cref="MigrationFailedException"/>; a cancelled token still throws
/// <see cref="OperationCanceledException"/>.
/// </summary>
internal interface IMigrationTransport : IAsyncDisposable
{
    /// <summary>The transport a migration uses unless a test swaps it in: gRPC over HTTP/2, to the options' target.</summary>
    static IMigrationTransport Create(GuestRam ram, TransportOptions options, BandwidthLimiter limiter,
        TransferCounters counters) => new GrpcMigrationTransport(ram, options, limiter, counters);

    Task<BeginReply> BeginAsync(BeginRequest request, CancellationToken ct);

    /// <summary>Opens one channel. <paramref name="streamToken"/> tears the stream down (failure, cancel).</summary>
    IPageSink OpenChannel(string migrationId, CancellationToken streamToken);

    /// <summary>Hands the guest over; throws when no reply arrives within <paramref name="timeout"/>.</summary>
    Task<CompleteReply> CompleteAsync(CompleteRequest request, TimeSpan timeout, CancellationToken ct);

    /// <summary>
    /// A rehearsal Complete (<see cref="CompleteRequest.Rehearsal"/> set): changes nothing on the target; returns the
    /// round trip.
    /// </summary>
    Task<TimeSpan> RehearseCompleteAsync(CompleteRequest request, CancellationToken ct);

    /// <summary>Resume-first's second half: the page digests of the stopped source guest.</summary>
    Task<CompleteReply> ConfirmAsync(ConfirmRequest request, TimeSpan timeout, CancellationToken ct);

    /// <summary>What the target says of this migration (its outcome, which it records before acting on it).</summary>
    Task<StatusReply> StatusAsync(string migrationId, TimeSpan timeout, CancellationToken ct);

    /// <summary>
    /// How many pages the target has taken off this migration's streams so far (pages written to a stream but not yet
    /// taken are in flight); null when the transport cannot tell.
    /// </summary>
    Task<long?> PagesReceivedAsync(string migrationId, CancellationToken ct) => Task.FromResult<long?>(null);

    /// <summary>
    /// Asks the target to discard the migration, telling it why. Null when the target could not be reached (never
    /// throws for that); else its answer, whose outcome says where the migration stands.
    /// </summary>
    Task<CancelReply?> CancelAsync(string migrationId, string reason);

    /// <summary>
    /// The cache delta pages are encoded against, when the options ask for deltas (whether the target takes them or
    /// not); null otherwise. <see cref="DeltaPageCache.Resize"/> is safe while pages are being sent.
    /// </summary>
    DeltaPageCache? DeltaCache => null;
}

/// <summary>One channel: page lists go in, in order; a barrier completes when everything before it is on the wire.</summary>
internal interface IPageSink : IAsyncDisposable
{
    ValueTask EnqueueAsync(PageWorkItem item, CancellationToken ct);

    Task BarrierAsync(CancellationToken ct);

    /// <summary>Ends the stream once everything queued is written and acknowledged.</summary>
    Task CompleteAsync(CancellationToken ct);

    /// <summary>
    /// Opens and closes an empty page stream on this channel's connection; returns the round trip. The switchover's
    /// stream-end code then runs warm, and its cost is known.
    /// </summary>
    Task<TimeSpan> RehearseCloseAsync(CancellationToken ct);
}

/// <summary>Pages to send in a round. <see cref="Pfns"/> is rented from the shared array pool; the sink returns it.</summary>
internal readonly record struct PageWorkItem(long[] Pfns, int Count, uint Round);
