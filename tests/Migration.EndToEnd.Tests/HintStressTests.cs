using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Source.Cli;
using Migration.TestSupport;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Real threads, real gRPC, real processes: a churning guest with hints on, migrated again and again (each attempt to a
/// fresh target), every one verified. The fuzzer explores interleavings; this checks the threaded build agrees.
/// </summary>
public sealed class HintStressTests
{
    [Theory]
    [InlineData(DirtyLogMode.Eager, false)]
    [InlineData(DirtyLogMode.Eager, true)]
    [InlineData(DirtyLogMode.Manual, true)]
    public async Task ManyShortMigrations_OfAChurningGuest_AllVerify(DirtyLogMode mode, bool waitOnAck)
    {
        for (int i = 0; i < 3; i++)
        {
            var guest = new GuestConfig
            {
                RamBytes = 48L << 20,
                Vcpus = 2,
                DirtyLogMode = mode,
                WaitOnAck = waitOnAck,
                PoisonValue = 0x5A,
                ClearChunkPages = 1024,
                Workload = new WorkloadOptions
                {
                    Kind = WorkloadKind.Churn,
                    Seed = (ulong)(100 + i),
                    ChurnHeldBlocks = 1500,
                },
            };
            await using var target =
                await TargetProcess.StartAsync(["--once", "--run-after", "0.2"], TimeSpan.FromSeconds(60));
            using var vm = VirtualMachine.Boot(guest);
            vm.Start();
            await Task.Delay(150 + (i * 50)); // different phases of the churn at migration time
            // Memory, not downtime: a limit load cannot miss (at a load average of 45 the rehearsals measured a 565 ms
            // switchover and the engine rightly refused 300 ms), and three rounds at least, so hints race later rounds.
            var options = new MigrationOptions
            {
                Target = target.Address,
                Hints = true,
                DowntimeLimit = TimeSpan.FromSeconds(5),
            };
            var seams = EngineSeams.Production with { Convergence = policy => new AtLeastRounds(policy, 3) };
            var report = await new PrecopyEngine(vm, options, seams)
                .MigrateAsync()
                .WaitAsync(TimeSpan.FromSeconds(120));

            Assert.True(report.Status == MigrationStatus.Completed, $"attempt {i}: {report.Error}");
            Assert.True(report.Verified, $"attempt {i}: not verified");
            Assert.Equal(0, report.Verification.MismatchedPages);
            Assert.True(report.Hints!.BlocksApplied > 0, $"attempt {i}: no hint was applied");
            Assert.Equal(0, await target.WaitForExitAsync(TimeSpan.FromSeconds(60)));
            Assert.Contains(target.Output, l => l.StartsWith("run-after: self-check ok", StringComparison.Ordinal));
        }
    }
}
