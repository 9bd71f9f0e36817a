using Grpc.Core;
using Grpc.Net.Client;
using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Source.Precopy;

namespace Migration.Source.Transport;

/// <summary>
/// The real transport: a control connection for Begin/Complete/Cancel and one HTTP/2 connection per channel.
/// </summary>
internal sealed class GrpcMigrationTransport : IMigrationTransport
{
    private readonly Uri _target;
    private readonly GuestRam _ram;
    private readonly bool _compress;
    private readonly int _pagesPerBatch;
    private readonly BandwidthLimiter _limiter;
    private readonly TransferCounters _counters;
    private readonly GrpcChannel _control;
    private readonly Protocol.Migration.MigrationClient _client;

    public GrpcMigrationTransport(Uri target, GuestRam ram, Compression compression, int pagesPerBatch,
        BandwidthLimiter limiter, TransferCounters counters)
    {
        _target = target;
        _ram = ram;
        _compress = compression == Compression.Lz4;
        _pagesPerBatch = pagesPerBatch;
        _limiter = limiter;
        _counters = counters;
        _control = PageChannel.CreateGrpcChannel(target);
        _client = new Protocol.Migration.MigrationClient(_control);
    }

    /// <summary>
    /// Asks the target for its status before anything else happens: a clear error now (unreachable, or busy with
    /// another migration) instead of after booting a large guest. Returns the target's state.
    /// </summary>
    public static async Task<StatusReply> ProbeAsync(Uri target, CancellationToken ct)
    {
        using var channel = PageChannel.CreateGrpcChannel(target);
        var client = new Protocol.Migration.MigrationClient(channel);
        return await client.StatusAsync(new StatusRequest(), deadline: Deadline(10), cancellationToken: ct)
            .ConfigureAwait(false);
    }

    public async Task BeginAsync(BeginRequest request, CancellationToken ct) =>
        await _client.BeginAsync(request, deadline: Deadline(30), cancellationToken: ct).ConfigureAwait(false);

    public IPageSink OpenChannel(string migrationId, CancellationToken streamToken) =>
        PageChannel.Open(_target, migrationId, _ram, _compress, _pagesPerBatch, _limiter, _counters, streamToken);

    public async Task<CompleteReply> CompleteAsync(CompleteRequest request, CancellationToken ct) =>
        await _client.CompleteAsync(request, deadline: Deadline(120), cancellationToken: ct).ConfigureAwait(false);

    public async Task CancelAsync(string migrationId, string reason)
    {
        try
        {
            await _client.CancelAsync(new CancelRequest { MigrationId = migrationId, Reason = reason },
                deadline: Deadline(2)).ConfigureAwait(false);
        }
        catch (RpcException)
        {
            // The target is gone or never knew the migration; nothing to undo there.
        }
    }

    public ValueTask DisposeAsync()
    {
        _control.Dispose();
        return ValueTask.CompletedTask;
    }

    private static DateTime Deadline(int seconds) => DateTime.UtcNow.AddSeconds(seconds);
}
