using System.Text;
using System.Text.Json;
using Google.Protobuf;
using Grpc.Core;
using Migration.Protocol;
using Migration.Shared.Balloon;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Transport;
using Migration.Shared.Verification;
using Migration.Source.Cli;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// The wire's versions against a real target process: a source of the previous version migrates a guest whose
/// device state matters (poisoned free pages, pages in the balloon), a version the target does not speak is refused at
/// Begin naming both, and a completion carrying a section no device owns is refused naming it.
/// </summary>
public sealed class ProtocolVersionTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task APreviousVersionSource_Migrates_AndTheGuestVerifies()
    {
        await using var target = await TargetProcess.StartAsync(["--once", "--run-after", "0.3"], Limit);
        using var vm = VirtualMachine.Boot(new GuestConfig
        {
            RamBytes = 64L << 20,
            Vcpus = 2,
            PoisonValue = 0xAA,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Churn, Seed = 4 },
        });
        vm.Start();
        Assert.True(SpinWait.SpinUntil(() => vm.IsWarm, Limit), "guest did not warm up");
        vm.Balloon.SetTargetPages(1024);
        Assert.True(SpinWait.SpinUntil(() => vm.Balloon.ActualPages == 1024, Limit), "the balloon did not inflate");

        var options = new MigrationOptions { Target = target.Address, Hints = true };
        Version1Source? source = null;
        var seams = EngineSeams.Production with
        {
            Transport = (machine, counters) => source = new Version1Source(new GrpcMigrationTransport(machine.Ram,
                options.Transport, new BandwidthLimiter(options.MaxBandwidthBytesPerSecond, TimeProvider.System),
                counters)),
        };
        var report = await new PrecopyEngine(vm, options, seams).MigrateAsync().WaitAsync(TimeSpan.FromSeconds(120));

        Assert.True(report.Status == MigrationStatus.Completed, report.Error);
        Assert.True(report.Verified);
        Assert.Equal(0, await target.WaitForExitAsync(Limit));
        Assert.Contains(target.Output, l => l.StartsWith("run-after: self-check ok", StringComparison.Ordinal));
        Assert.NotNull(source);
        Assert.Equal(ProtocolVersions.Previous, source.TargetVersion); // the version this migration runs at
        Assert.True(source.CompletionsRewritten > 0, "no completion went out in version 1's form");
    }

    [Fact]
    public async Task AVersionTheTargetDoesNotSpeak_IsRefusedAtBegin_NamingBoth()
    {
        await using var target = await TargetProcess.StartAsync([], Limit);
        using var vm = VirtualMachine.Boot(new GuestConfig { RamBytes = 16L << 20, Vcpus = 1 });
        using var channel = ControlChannel.Create(target.Address, TransportSecurity.None);
        var client = new Protocol.Migration.MigrationClient(channel);
        string configJson = JsonSerializer.Serialize(vm.Config, WireJson.Default.GuestConfig);
        foreach (uint version in new[] { ProtocolVersions.Current + 1, 100u })
        {
            var begin = HandDrivenSource.Begin(vm, Guid.NewGuid().ToString("n"), configJson);
            begin.ProtocolVersion = version;
            var ex = await Assert.ThrowsAsync<RpcException>(async () => await client.BeginAsync(begin));
            Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);
            Assert.Contains($"protocol version {version};", ex.Status.Detail, StringComparison.Ordinal);
            Assert.Contains($"accepts versions {ProtocolVersions.Previous} and {ProtocolVersions.Current}",
                ex.Status.Detail, StringComparison.Ordinal);
        }

        // Refused before anything was held: the same target takes a source that speaks its version.
        var again = HandDrivenSource.Begin(vm, Guid.NewGuid().ToString("n"), configJson);
        Assert.Equal(ProtocolVersions.Current, (await client.BeginAsync(again)).ProtocolVersion);
    }

    [Fact]
    public async Task ASectionNoDeviceOwns_IsRefusedNamingIt_AndNoGuestRuns()
    {
        await using var target = await TargetProcess.StartAsync([], Limit);
        using var vm = VirtualMachine.Boot(new GuestConfig { RamBytes = 16L << 20, Vcpus = 2 });
        using var channel = ControlChannel.Create(target.Address, TransportSecurity.None);
        var client = new Protocol.Migration.MigrationClient(channel);
        string id = Guid.NewGuid().ToString("n");
        string configJson = JsonSerializer.Serialize(vm.Config, WireJson.Default.GuestConfig);
        var begun = await client.BeginAsync(HandDrivenSource.Begin(vm, id, configJson));
        var headers = new Metadata { { "migration-id", id }, { "migration-key", begun.MigrationKey } };
        await HandDrivenSource.SendAllPagesAsync(channel, headers, vm.Ram, round: 1);

        // Digested as sent, so only the section itself can be the reason for a refusal.
        var devices = vm.SaveDevices().Append(new Shared.Devices.DeviceSection("virtio-rng", 1, new byte[] { 7 }))
            .ToList();
        byte[][] vcpus = [.. vm.SaveVcpuStates()];
        ulong[] pages = PageDigests.Compute(vm.Ram, vm.Kernel.FreePageMap());
        var complete = new CompleteRequest
        {
            MigrationId = id,
            PageDigests = ByteString.CopyFrom(PageDigests.ToBytes(pages)),
            DigestPages = (ulong)pages.Length,
            FinalRound = 2,
            StateDigest = HandDrivenSource.StateDigest(configJson, vcpus, devices),
        };
        HandDrivenSource.AddState(complete, vcpus, devices);
        var reply = await client.CompleteAsync(complete, new Metadata { { "migration-key", begun.MigrationKey } });

        Assert.False(reply.Resumed);
        Assert.Contains("device section 'virtio-rng' version 1", reply.Error, StringComparison.Ordinal);
        Assert.Equal("failed", await target.WaitForStateAsync(Limit, "failed"));
    }

    /// <summary>
    /// A source of protocol version 1, made from today's: Begin declares no version, and every completion carries the
    /// balloon's state as version 1's single device message with version 1's state digest.
    /// </summary>
    private sealed class Version1Source(IMigrationTransport inner) : IMigrationTransport
    {
        private byte[] _config = [];
        private int _rewritten;

        public uint TargetVersion { get; private set; }

        public int CompletionsRewritten => Volatile.Read(ref _rewritten);

        public async Task<BeginReply> BeginAsync(BeginRequest request, CancellationToken ct)
        {
            var v1 = request.Clone();
            v1.ProtocolVersion = 0; // version 1 predates the field
            _config = Encoding.UTF8.GetBytes(v1.GuestConfigJson);
            var reply = await inner.BeginAsync(v1, ct).ConfigureAwait(false);
            TargetVersion = reply.ProtocolVersion;
            return reply;
        }

        public IPageSink OpenChannel(string migrationId, CancellationToken streamToken) =>
            inner.OpenChannel(migrationId, streamToken);

        public Task<CompleteReply> CompleteAsync(CompleteRequest request, TimeSpan timeout, CancellationToken ct) =>
            inner.CompleteAsync(AsVersion1(request), timeout, ct);

        public Task<TimeSpan> RehearseCompleteAsync(CompleteRequest request, CancellationToken ct) =>
            inner.RehearseCompleteAsync(AsVersion1(request), ct);

        public Task<CompleteReply> ConfirmAsync(ConfirmRequest request, TimeSpan timeout, CancellationToken ct) =>
            inner.ConfirmAsync(request, timeout, ct);

        public Task<StatusReply> StatusAsync(string migrationId, TimeSpan timeout, CancellationToken ct) =>
            inner.StatusAsync(migrationId, timeout, ct);

        public Task<long?> PagesReceivedAsync(string migrationId, CancellationToken ct) =>
            inner.PagesReceivedAsync(migrationId, ct);

        public Task<CancelReply?> CancelAsync(string migrationId, string reason) =>
            inner.CancelAsync(migrationId, reason);

        public ValueTask DisposeAsync() => inner.DisposeAsync();

        private CompleteRequest AsVersion1(CompleteRequest request)
        {
            var v1 = request.Clone();
            var section = Assert.Single(v1.DeviceSections);
            Assert.Equal((BalloonSection.Id, BalloonSection.Version), (section.Id, section.Version));
            v1.Device = DeviceState.Parser.ParseFrom(section.Data);
            v1.DeviceSections.Clear();
            v1.StateDigest = MigrationStateDigest.ComputeVersion1(_config, v1.VcpuStates.Select(s => s.Memory),
                v1.Device.ToByteArray());
            Interlocked.Increment(ref _rewritten);
            return v1;
        }
    }
}
