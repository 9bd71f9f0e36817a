using System.Security.Cryptography;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Protocol;
using MigrationClient = Migration.Protocol.Migration.MigrationClient;

namespace Migration.Shared.Transport;

/// <summary>
/// The real transport: a control connection for Begin, Complete, Cancel and Status, and one HTTP/2 connection per
/// channel. Every call carries the shared token when there is one, and after Begin the migration's key. A call's
/// failure leaves as a <see cref="MigrationFailedException"/> (<see cref="TransportFailures"/>).
/// </summary>
internal sealed class GrpcMigrationTransport : IMigrationTransport
{
    private readonly Uri _target;
    private readonly GuestRam _ram;
    private readonly TransportOptions _options;
    private readonly BandwidthLimiter _limiter;
    private readonly TransferCounters _counters;
    private readonly GrpcChannel _control;
    private readonly MigrationClient _client;
    /// <summary>Once per process, beside the first migration with deltas (<see cref="DeltaEncoder.WarmUp"/>).</summary>
    private static readonly Lazy<Task> DeltaWarmUp = new(() => Task.Run(DeltaEncoder.WarmUp));

    private readonly DeltaPageCache? _deltaCache;
    private PageRouting? _routing; // set when the target took delta pages
    private string? _key;

    /// <param name="controlCalls">
    /// Sees every control call (tests play an older target by editing its replies); null in production.
    /// </param>
    public GrpcMigrationTransport(GuestRam ram, TransportOptions options, BandwidthLimiter limiter,
        TransferCounters counters, Interceptor? controlCalls = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _target = options.Target;
        _ram = ram;
        _options = options;
        _limiter = limiter;
        _counters = counters;
        _control = ControlChannel.Create(_target, options.Security);
        _client = controlCalls is null
            ? new MigrationClient(_control)
            : new MigrationClient(_control.Intercept(controlCalls));
        // A cache larger than the guest would hold nothing more.
        _deltaCache = options.DeltaCacheBytes > 0
            ? new DeltaPageCache(Math.Min(options.DeltaCacheBytes, ram.SizeBytes))
            : null;
    }

    public DeltaPageCache? DeltaCache => _deltaCache;

    /// <summary>
    /// Asks the target for its state before anything else happens: a clear error now (unreachable, refused, or busy
    /// with another migration) instead of after booting a large guest. For the command line, before any engine runs:
    /// it throws the call's <see cref="RpcException"/> as it is.
    /// </summary>
    public static async Task<StatusReply> ProbeAsync(Uri target, TransportSecurity security, CancellationToken ct)
    {
        using var channel = ControlChannel.Create(target, security);
        var client = new MigrationClient(channel);
        return await client.StatusAsync(new StatusRequest(), Headers(security, null),
            Deadline(TimeSpan.FromSeconds(10)), ct).ConfigureAwait(false);
    }

    /// <remarks>
    /// The key is proposed here, so it is known before the reply: a Begin whose reply is lost (its deadline, a cancel)
    /// can still be cancelled with it. A target that ignores the proposal answers with its own, which then counts.
    /// Delta pages are offered here when the options ask for them, and used only if the target lists them in its reply
    /// (an older target ignores the offer and gets whole pages).
    /// </remarks>
    public async Task<BeginReply> BeginAsync(BeginRequest request, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.MigrationKey.Length == 0)
        {
            request.MigrationKey = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        }

        _key = request.MigrationKey;
        if (_deltaCache is not null && !request.Features.Contains(WireNames.DeltaPagesFeature))
        {
            request.Features.Add(WireNames.DeltaPagesFeature);
        }

        var reply = await TransportFailures.Call(async () => await _client.BeginAsync(request,
            Headers(_options.Security, null), Deadline(_options.ControlCallTimeout), ct)).ConfigureAwait(false);
        _key = reply.MigrationKey;
        if (_deltaCache is not null && reply.Features.Contains(WireNames.DeltaPagesFeature))
        {
            _routing = new PageRouting();
            _counters.DeltaCache = _deltaCache;
            _ = DeltaWarmUp.Value; // round 0 sends no delta: by the first resend the encoder's code is compiled
        }

        return reply;
    }

    public IPageSink OpenChannel(string migrationId, CancellationToken streamToken) =>
        PageChannel.Open(_ram, _options, migrationId, Headers(_options.Security, _key), _limiter, _counters,
            streamToken,
            _routing is null ? null : new DeltaEncoder(_deltaCache!, _routing.Count, StandardDeltaDefences.Instance),
            _routing);

    public Task<CompleteReply> CompleteAsync(CompleteRequest request, TimeSpan timeout, CancellationToken ct) =>
        TransportFailures.Call(async () =>
            await _client.CompleteAsync(request, Headers(_options.Security, _key), Deadline(timeout), ct));

    public async Task<TimeSpan> RehearseCompleteAsync(CompleteRequest request, CancellationToken ct)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        _ = await TransportFailures.Call(async () => await _client.CompleteAsync(request,
            Headers(_options.Security, _key), Deadline(_options.ControlCallTimeout), ct)).ConfigureAwait(false);
        return System.Diagnostics.Stopwatch.GetElapsedTime(start);
    }

    public Task<CompleteReply> ConfirmAsync(ConfirmRequest request, TimeSpan timeout, CancellationToken ct) =>
        TransportFailures.Call(async () =>
            await _client.ConfirmAsync(request, Headers(_options.Security, _key), Deadline(timeout), ct));

    /// <remarks>
    /// On a connection of its own, as <see cref="CancelAsync"/>: they are asked when something went wrong, and the
    /// control connection may be what went wrong (reset, or stalled in a middlebox that lost its state).
    /// </remarks>
    public async Task<StatusReply> StatusAsync(string migrationId, TimeSpan timeout, CancellationToken ct)
    {
        using var channel = ControlChannel.Create(_target, _options.Security);
        return await TransportFailures.Call(async () => await new MigrationClient(channel).StatusAsync(
            new StatusRequest { MigrationId = migrationId }, Headers(_options.Security, _key), Deadline(timeout), ct))
            .ConfigureAwait(false);
    }

    public async Task<long?> PagesReceivedAsync(string migrationId, CancellationToken ct)
    {
        var reply = await TransportFailures.Call(async () => await _client.StatusAsync(
            new StatusRequest { MigrationId = migrationId }, Headers(_options.Security, _key),
            Deadline(_options.ControlCallTimeout), ct)).ConfigureAwait(false);
        return (long)reply.PagesReceived;
    }

    public async Task<CancelReply?> CancelAsync(string migrationId, string reason)
    {
        try
        {
            using var channel = ControlChannel.Create(_target, _options.Security);
            return await new MigrationClient(channel).CancelAsync(
                new CancelRequest { MigrationId = migrationId, Reason = reason }, Headers(_options.Security, _key),
                Deadline(TimeSpan.FromSeconds(2))).ConfigureAwait(false);
        }
        catch (RpcException)
        {
            return null; // the target is gone or never knew the migration; nothing to undo there
        }
    }

    public ValueTask DisposeAsync()
    {
        _control.Dispose();
        _deltaCache?.Dispose(); // the channels are closed: their encoders are done with it
        return ValueTask.CompletedTask;
    }

    /// <summary>The token and the migration's key, as request headers.</summary>
    internal static Metadata Headers(TransportSecurity security, string? key, string? migrationId = null)
    {
        var headers = new Metadata();
        if (security.Token is string token)
        {
            headers.Add(WireNames.AuthorizationHeader, "Bearer " + token);
        }

        if (key is not null)
        {
            headers.Add(WireNames.MigrationKeyHeader, key);
        }

        if (migrationId is not null)
        {
            headers.Add(WireNames.MigrationIdHeader, migrationId);
        }

        return headers;
    }

    private static DateTime Deadline(TimeSpan timeout) => DateTime.UtcNow.Add(timeout);
}
