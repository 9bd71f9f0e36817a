using Migration.Protocol;

namespace Migration.Source.Transport;

/// <summary>
/// How the engine reaches a target: the control calls and one page sink per channel. Production uses
/// <see cref="GrpcMigrationTransport"/>; the race fuzzer plugs in an in-memory target driven by its scheduler.
/// </summary>
internal interface IMigrationTransport : IAsyncDisposable
{
    Task BeginAsync(BeginRequest request, CancellationToken ct);

    /// <summary>Opens one channel. <paramref name="streamToken"/> tears the stream down (failure, cancel).</summary>
    IPageSink OpenChannel(string migrationId, CancellationToken streamToken);

    Task<CompleteReply> CompleteAsync(CompleteRequest request, CancellationToken ct);

    /// <summary>Best effort: tells the target why the migration ends; never throws for an unreachable target.</summary>
    Task CancelAsync(string migrationId, string reason);
}

/// <summary>
/// One channel: page lists go in, in order; a barrier completes when everything before it is on the wire.
/// </summary>
internal interface IPageSink : IAsyncDisposable
{
    ValueTask EnqueueAsync(PageWorkItem item, CancellationToken ct);

    Task BarrierAsync(CancellationToken ct);

    /// <summary>Ends the stream once everything queued is written and acknowledged.</summary>
    Task CompleteAsync(CancellationToken ct);
}

/// <summary>
/// Pages to send in a round. <see cref="Pfns"/> is rented from the shared array pool; the sink returns it.
/// </summary>
internal readonly record struct PageWorkItem(long[] Pfns, int Count, uint Round);
