using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Source.Cli;
using Xunit.Abstractions;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// One target process serves migration after migration (each guest runs briefly, passes its self-check and stops),
/// with the mixes users run: hints on and off, both dirty-log modes, one to three channels, failed attempts between
/// good ones. The soak benchmark does this a hundred times and charts memory; here six, and the handles must not grow.
/// </summary>
public sealed class LongLivedTargetTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Free = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task OneTarget_TakesMigrationAfterMigration_WithoutLeakingHandles()
    {
        await using var target = await TargetProcess.StartAsync(["--run-after", "0.1"], TimeSpan.FromSeconds(60));
        var handles = new List<int>();
        WorkloadKind[] kinds = [WorkloadKind.Idle, WorkloadKind.Busy, WorkloadKind.Churn];
        for (int i = 0; i < 6; i++)
        {
            using var vm = VirtualMachine.Boot(new GuestConfig
            {
                RamBytes = 32L << 20,
                Vcpus = 2,
                DirtyLogMode = i % 2 == 0 ? DirtyLogMode.Eager : DirtyLogMode.Manual,
                ClearChunkPages = 2048,
                Workload = new WorkloadOptions { Kind = kinds[i % 3], Seed = (ulong)i, BusyDirtyPagesPerSecond = 3000 },
            });
            vm.Start();
            var options = MigrationOptions.Defaults with
            {
                Target = target.Address,
                Channels = 1 + (i % 3),
                Hints = i % 4 < 2,
            };
            if (i == 3)
            {
                // A failed attempt in between: cancelled mid-round, and the guest goes again.
                using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(150));
                var slow = options with { MaxBandwidthBytesPerSecond = 4e6 };
                var cancelled = await new PrecopyEngine(vm, slow).MigrateAsync(cancel.Token);
                Assert.Equal(MigrationStatus.Cancelled, cancelled.Status);
                await target.WaitForStateAsync(Free, "idle", "failed");
            }

            var report = await new PrecopyEngine(vm, options).MigrateAsync().WaitAsync(TimeSpan.FromSeconds(90));
            Assert.True(report is { Status: MigrationStatus.Completed, Verified: true },
                $"migration {i}: {report.Status}: {report.Error}");
            await target.WaitForStateAsync(Free, "idle", "failed"); // the guest ran, checked itself, and stopped
            handles.Add(Directory.GetFiles($"/proc/{target.ProcessId}/fd").Length);
        }

        output.WriteLine("target file descriptors after each migration: " + string.Join(", ", handles));
        Assert.True(handles[^1] <= handles[1] + 16, $"handles grew: {string.Join(", ", handles)}");
        Assert.Equal(6, target.Output.Count(l => l.StartsWith("run-after: self-check ok", StringComparison.Ordinal)));
    }
}
