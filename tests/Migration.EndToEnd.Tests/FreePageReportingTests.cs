using Migration.Shared.Balloon;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Source.Cli;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Free page reporting against real target processes: discarded pages are skipped and the guest verifies; a poisoning
/// guest's pages are kept and sent; reported blocks the guest takes back and writes, before or during the migration,
/// arrive.
/// </summary>
public sealed class FreePageReportingTests
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    private static GuestConfig Guest(byte? poison) => new()
    {
        RamBytes = 128L << 20,
        Vcpus = 2,
        PoisonValue = poison,
        Workload = new WorkloadOptions { Kind = WorkloadKind.Memhog, Seed = 9 },
        Balloon = new BalloonOptions { Reporting = true, ReportingDelayMs = 50, ReportingBudgetDivisor = 1 },
    };

    private static async Task<MigrationReport> MigrateAsync(GuestConfig guest, bool hints,
        Action<VirtualMachine>? beforeMigrating = null, Action<VirtualMachine>? whileMigrating = null)
    {
        await using var target = await TargetProcess.StartAsync(["--once", "--run-after", "0.3"], StartTimeout);
        using var vm = VirtualMachine.Boot(guest);
        vm.Start();
        Assert.True(SpinWait.SpinUntil(() => vm.IsWarm, TimeSpan.FromSeconds(60)), "guest did not warm up");
        Assert.True(SpinWait.SpinUntil(() => vm.ReportingDriver!.Passes > 0 && !vm.ReportingDriver.Busy,
            TimeSpan.FromSeconds(30)), "the guest did not finish reporting");
        beforeMigrating?.Invoke(vm);
        var migration = new PrecopyEngine(vm, new MigrationOptions { Target = target.Address, Hints = hints })
            .MigrateAsync();
        whileMigrating?.Invoke(vm);
        var report = await migration.WaitAsync(TimeSpan.FromSeconds(120));
        Assert.Equal(0, await target.WaitForExitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains(target.Output, l => l.StartsWith("run-after: self-check ok", StringComparison.Ordinal));
        Assert.True(report.Status == MigrationStatus.Completed, report.Error);
        Assert.True(report.Verified);
        return report;
    }

    [Fact]
    public async Task DiscardedPages_AreSkipped_AndTheGuestVerifies()
    {
        // Hints on too: the two mechanisms together (the race fuzzer's Reporting profile has both on every seed).
        var guest = Guest(poison: null);
        var report = await MigrateAsync(guest, hints: true);
        Assert.NotNull(report.Reporting);
        Assert.True(report.Transfer.PagesSkippedAsDiscarded > guest.PageCount / 2,
            $"only {report.Transfer.PagesSkippedAsDiscarded} of {guest.PageCount} pages skipped as discarded");
        Assert.True(report.Reporting!.PagesDiscarded >= report.Transfer.PagesSkippedAsDiscarded);
        Assert.Equal(0, report.Balloon!.DeviceErrors);
        Assert.True(report.Transfer.PagesNormal + report.Transfer.PagesCompressed < guest.PageCount / 4);
    }

    [Fact]
    public async Task APoisoningGuestsPages_AreKept_SentAndStillPoisonedOnTheTarget()
    {
        var report = await MigrateAsync(Guest(poison: 0xaa), hints: false);
        Assert.Equal(0, report.Reporting!.PagesDiscarded);
        Assert.True(report.Reporting.PagesKeptPoisoned > 0);
        Assert.Equal(0, report.Transfer.PagesSkippedAsDiscarded);
    }

    [Fact]
    public async Task ReportedBlocksTakenBackAndWritten_BeforeAndDuringTheMigration_Arrive()
    {
        // Stamped blocks: the target's self-check reads every stamp, so a block skipped as discarded fails the run.
        static void TakeBack(VirtualMachine vm, int blocks)
        {
            for (int i = 0; i < blocks; i++)
            {
                vm.Kernel.TryAllocate(BalloonOptions.DefaultReportingOrder, PageOwner.Anonymous, stamp: true);
            }
        }

        var report = await MigrateAsync(Guest(poison: null), hints: false,
            beforeMigrating: vm =>
            {
                Assert.True(vm.Kernel.ReportedPages > 0);
                TakeBack(vm, 8);
            },
            whileMigrating: vm => TakeBack(vm, 8));
        Assert.True(report.Transfer.PagesSkippedAsDiscarded > 0);
        Assert.Equal(0, report.Verification.MismatchedPages);
    }
}
