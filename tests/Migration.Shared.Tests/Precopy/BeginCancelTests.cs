using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;

namespace Migration.Shared.Tests.Precopy;

/// <summary>
/// A cancel that lands while Begin is on its way: the target has taken Begin and holds the migration, but its reply,
/// with the key every later call about the migration needs, has not reached the source yet. The source must still
/// learn the key, so that its Cancel frees the target at once rather than after the target's whole lease.
/// </summary>
public sealed class BeginCancelTests
{
    [Fact]
    public async Task ACancelWhileBeginIsAnswered_WaitsForTheKey_AndTheCancelCarriesIt()
    {
        using var vm = VirtualMachine.Boot(new GuestConfig
        {
            RamBytes = 16L << 20,
            Vcpus = 1,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Idle },
        });
        vm.Start();
        using var user = new CancellationTokenSource();
        FakeTransport? transport = null;
        var seams = EngineSeams.Production with
        {
            Transport = (source, counters) => transport = new FakeTransport(source, counters)
            {
                BeforeBeginReply = async () =>
                {
                    await user.CancelAsync(); // Ctrl+C, between the target taking Begin and its reply arriving
                    await Task.Delay(TimeSpan.FromMilliseconds(50));
                },
            },
        };
        var options = MigrationOptions.Defaults with { Target = new Uri("http://in-process") };

        var report = await new PrecopyEngine(vm, options, seams).MigrateAsync(user.Token)
            .WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(MigrationStatus.Cancelled, report.Status);
        Assert.Equal("key", transport!.KeyDelivered);
        var cancel = Assert.Single(transport.Calls, c => c.StartsWith("cancel", StringComparison.Ordinal));
        Assert.StartsWith("cancel: ", cancel, StringComparison.Ordinal); // with the key: the target frees at once
        Assert.Equal(VmRunState.Running, vm.State);
    }
}
