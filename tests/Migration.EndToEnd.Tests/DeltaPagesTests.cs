using Google.Protobuf;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Transport;
using Migration.Source.Cli;
using Migration.TestSupport;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Delta pages (XBZRLE) against real target processes: a busy guest with a hot set migrates with deltas and verifies;
/// a delta for a page the target never received fails the migration while the source guest runs on and the target
/// keeps nothing; a target that does not list the feature gets whole pages.
/// </summary>
public sealed class DeltaPagesTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    private static VirtualMachine BootBusy(long ramBytes, ulong seed)
    {
        var vm = VirtualMachine.Boot(new GuestConfig
        {
            RamBytes = ramBytes,
            Vcpus = 2,
            Workload = new WorkloadOptions
            {
                Kind = WorkloadKind.Busy,
                Seed = seed,
                BusyDirtyPagesPerSecond = 8000,
                BusyHotSetShare = 0.1,
            },
        });
        vm.Start();
        Assert.True(SpinWait.SpinUntil(() => vm.IsWarm, Limit), "guest did not warm up");
        return vm;
    }

    private static EngineSeams Seams(Func<IMigrationTransport, Wrapped> wrap, MigrationOptions options, int rounds) =>
        EngineSeams.Production with
        {
            Transport = (machine, counters) => wrap(IMigrationTransport.Create(machine.Ram, options.Transport,
                new BandwidthLimiter(options.MaxBandwidthBytesPerSecond, TimeProvider.System), counters)),
            Convergence = policy => new AtLeastRounds(policy, rounds),
        };

    [Fact]
    public async Task ABusyGuestWithAHotSet_MigratesWithDeltas_AndVerifies()
    {
        await using var target = await TargetProcess.StartAsync(["--once", "--run-after", "0.3"], Limit);
        using var vm = BootBusy(128L << 20, seed: 3);
        var options = new MigrationOptions
        {
            Target = target.Address,
            Channels = 2,
            MaxBandwidthBytesPerSecond = 100e6,
            DeltaCacheBytes = 16L << 20,
        };
        Wrapped? transport = null;
        var seams = Seams(inner => transport = new Wrapped(inner), options, rounds: 4);

        var report = await new PrecopyEngine(vm, options, seams).MigrateAsync().WaitAsync(TimeSpan.FromSeconds(120));

        Assert.True(report.Status == MigrationStatus.Completed, report.Error);
        Assert.True(report.Verified);
        Assert.Equal(0, report.Verification.MismatchedPages);
        Assert.Contains(WireNames.DeltaPagesFeature, transport!.Offered);
        var delta = Assert.IsType<Shared.Reporting.MigrationReport.DeltaSection>(report.Transfer.Delta);
        Assert.True(delta.Hits > 0, "no page went as a delta");
        Assert.Equal(report.Transfer.PagesDelta, delta.Hits);
        Assert.True(delta.Misses > 0, "the first resend of a page cannot be a hit");
        Assert.True(delta.BytesSaved > delta.Hits * 2048, $"{delta.BytesSaved} bytes saved by {delta.Hits} deltas");
        Assert.Equal(16L << 20, delta.CacheBytes);
        Assert.Equal(0, await target.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains(target.Output, l => l.StartsWith("run-after: self-check ok", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ADeltaForAPageTheTargetNeverReceived_FailsTheMigration_TheGuestRunsOn_TheTargetKeepsNothing()
    {
        await using var target = await TargetProcess.StartAsync([], Limit);
        using var vm = BootBusy(32L << 20, seed: 4);
        var options = new MigrationOptions { Target = target.Address, DeltaCacheBytes = 8L << 20 };
        RpcException? refused = null;
        var seams = Seams(inner => new Wrapped(inner)
        {
            // A broken source: right after Begin, before any page, a delta for page 100 against a round-0 copy.
            AfterBegin = async (request, reply) => refused = await Assert.ThrowsAsync<RpcException>(
                () => SendDeltaAsync(target.Address, request.MigrationId, reply.MigrationKey, pfn: 100)),
        }, options, rounds: 1);

        var report = await new PrecopyEngine(vm, options, seams).MigrateAsync().WaitAsync(Limit);

        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.NotNull(refused);
        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
        Assert.Contains("delta for page 100, which this target has not received", refused.Status.Detail,
            StringComparison.Ordinal);
        Assert.Equal(VmRunState.Running, vm.State);
        long writes = vm.PageWrites;
        Assert.True(SpinWait.SpinUntil(() => vm.PageWrites > writes + 100, Limit), "the source guest stopped");
        Assert.Equal("failed", await target.StateAsync());

        // The target discarded the partial guest: the next migration starts afresh and verifies.
        var retry = await new PrecopyEngine(vm, new MigrationOptions { Target = target.Address })
            .MigrateAsync().WaitAsync(TimeSpan.FromSeconds(120));
        Assert.True(retry.Status == MigrationStatus.Completed, retry.Error);
        Assert.True(retry.Verified);
    }

    [Fact]
    public async Task ATargetThatDoesNotListDeltaPages_GetsWholePages_AndTheGuestVerifies()
    {
        await using var target = await TargetProcess.StartAsync(["--once"], Limit);
        using var vm = BootBusy(64L << 20, seed: 5);
        var options = new MigrationOptions
        {
            Target = target.Address,
            MaxBandwidthBytesPerSecond = 100e6,
            DeltaCacheBytes = 16L << 20,
        };
        Wrapped? transport = null;
        var seams = EngineSeams.Production with
        {
            // A target from before delta pages: it ignores the offer, and its reply does not list them.
            Transport = (machine, counters) => transport = new Wrapped(new GrpcMigrationTransport(machine.Ram,
                options.Transport, new BandwidthLimiter(options.MaxBandwidthBytesPerSecond, TimeProvider.System),
                counters, new RepliesWithoutDeltaPages())),
            Convergence = policy => new AtLeastRounds(policy, 3),
        };

        var report = await new PrecopyEngine(vm, options, seams).MigrateAsync().WaitAsync(TimeSpan.FromSeconds(120));

        Assert.True(report.Status == MigrationStatus.Completed, report.Error);
        Assert.True(report.Verified);
        Assert.Contains(WireNames.DeltaPagesFeature, transport!.Offered);
        Assert.Null(report.Transfer.Delta);
        Assert.Equal(0, report.Transfer.PagesDelta);
        Assert.True(report.Rounds.Skip(1).Sum(r => r.PagesSent) > 0, "nothing was sent again");
    }

    /// <summary>One batch holding a delta for <paramref name="pfn"/>, on a page stream of its own.</summary>
    private static async Task SendDeltaAsync(Uri target, string id, string key, long pfn)
    {
        var delta = new byte[16];
        int n = DeltaPayload.WriteBase(delta, 0);
        var changed = new byte[PageGeometry.PageSize];
        changed[0] = 1;
        n += Xbzrle.Encode(new byte[PageGeometry.PageSize], changed, delta.AsSpan(n));
        using var channel = ControlChannel.Create(target, TransportSecurity.None);
        var headers = new Metadata { { WireNames.MigrationIdHeader, id }, { WireNames.MigrationKeyHeader, key } };
        using var stream = new PageStream.PageStreamClient(channel).SendPages(headers);
        await stream.RequestStream.WriteAsync(new PageBatch
        {
            Round = 1,
            Pfns = { (ulong)pfn },
            Encodings = { PageEncoding.Delta },
            Lengths = { (uint)n },
            Payload = ByteString.CopyFrom(delta, 0, n),
        });
        await stream.RequestStream.CompleteAsync();
        await stream.ResponseAsync;
    }

    /// <summary>Begin's reply as a target from before delta pages gives it: without the feature.</summary>
    private sealed class RepliesWithoutDeltaPages : Interceptor
    {
        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request,
            ClientInterceptorContext<TRequest, TResponse> context,
            AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            var call = continuation(request, context);
            return new AsyncUnaryCall<TResponse>(WithoutDeltaPages(call.ResponseAsync), call.ResponseHeadersAsync,
                call.GetStatus, call.GetTrailers, call.Dispose);
        }

        private static async Task<T> WithoutDeltaPages<T>(Task<T> response)
        {
            var reply = await response.ConfigureAwait(false);
            if (reply is BeginReply begun)
            {
                Assert.True(begun.Features.Remove(WireNames.DeltaPagesFeature), "today's target lists delta pages");
            }

            return reply;
        }
    }

    /// <summary>The real transport, with a hook after Begin.</summary>
    private sealed class Wrapped(IMigrationTransport inner) : IMigrationTransport
    {
        public Func<BeginRequest, BeginReply, Task>? AfterBegin { get; init; }

        /// <summary>The features Begin offered the target.</summary>
        public List<string> Offered { get; } = [];

        public async Task<BeginReply> BeginAsync(BeginRequest request, CancellationToken ct)
        {
            var reply = await inner.BeginAsync(request, ct).ConfigureAwait(false);
            Offered.AddRange(request.Features);
            if (AfterBegin is { } after)
            {
                await after(request, reply).ConfigureAwait(false);
            }

            return reply;
        }

        public IPageSink OpenChannel(string migrationId, CancellationToken streamToken) =>
            inner.OpenChannel(migrationId, streamToken);

        public Task<CompleteReply> CompleteAsync(CompleteRequest request, TimeSpan timeout, CancellationToken ct) =>
            inner.CompleteAsync(request, timeout, ct);

        public Task<TimeSpan> RehearseCompleteAsync(CompleteRequest request, CancellationToken ct) =>
            inner.RehearseCompleteAsync(request, ct);

        public Task<CompleteReply> ConfirmAsync(ConfirmRequest request, TimeSpan timeout, CancellationToken ct) =>
            inner.ConfirmAsync(request, timeout, ct);

        public Task<StatusReply> StatusAsync(string migrationId, TimeSpan timeout, CancellationToken ct) =>
            inner.StatusAsync(migrationId, timeout, ct);

        public Task<long?> PagesReceivedAsync(string migrationId, CancellationToken ct) =>
            inner.PagesReceivedAsync(migrationId, ct);

        public Task<CancelReply?> CancelAsync(string migrationId, string reason) =>
            inner.CancelAsync(migrationId, reason);

        public DeltaPageCache? DeltaCache => inner.DeltaCache;

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
