using Migration.Shared.Balloon;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Source.Cli;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Free page hinting against real target processes: it saves what it should, and bad hints cost only the hints.
/// </summary>
public sealed class FreePageHintTests
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    private static async Task<MigrationReport> MigrateAsync(GuestConfig guest, bool hints,
        Action<VirtualMachine>? whileMigrating = null, Func<VirtualMachine, Func<bool>>? holdPrecopy = null)
    {
        await using var target = await TargetProcess.StartAsync(["--once", "--run-after", "0.3"], StartTimeout);
        using var vm = VirtualMachine.Boot(guest);
        vm.Start();
        Assert.True(SpinWait.SpinUntil(() => vm.IsWarm, TimeSpan.FromSeconds(60)), "guest did not warm up");
        var options = new MigrationOptions { Target = target.Address, Hints = hints };
        var seams = EngineSeams.Production;
        if (holdPrecopy is not null)
        {
            options = options with { MaxRounds = 100_000, Timeout = TimeSpan.FromSeconds(60) };
            seams = seams with { Convergence = policy => new HoldWhile(policy, holdPrecopy(vm)) };
        }

        var migration = new PrecopyEngine(vm, options, seams).MigrateAsync();
        whileMigrating?.Invoke(vm);
        var report = await migration.WaitAsync(TimeSpan.FromSeconds(120));
        Assert.Equal(0, await target.WaitForExitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains(target.Output, l => l.StartsWith("run-after: self-check ok", StringComparison.Ordinal));
        return report;
    }

    [Theory]
    [InlineData(DirtyLogMode.Eager, null)]
    [InlineData(DirtyLogMode.Manual, (byte)0xAA)]
    public async Task StaleFreeMemory_IsNotSent_AndTheGuestVerifies(DirtyLogMode mode, byte? poison)
    {
        // memhog fills 90% of RAM with data and frees it: stale free memory, the case hints are for.
        var guest = new GuestConfig
        {
            RamBytes = 128L << 20,
            Vcpus = 2,
            DirtyLogMode = mode,
            PoisonValue = poison,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Memhog, Seed = 5 },
        };
        var off = await MigrateAsync(guest, hints: false);
        var on = await MigrateAsync(guest, hints: true);

        foreach (var r in new[] { off, on })
        {
            Assert.True(r.Status == MigrationStatus.Completed, r.Error);
            Assert.True(r.Verified);
            Assert.Equal(0, r.Verification.MismatchedPages);
        }

        Assert.Null(off.Hints);
        Assert.NotNull(on.Hints);
        long pages = guest.PageCount;
        Assert.True(on.Transfer.PagesSkippedByHints > pages / 2,
            $"only {on.Transfer.PagesSkippedByHints} of {pages} pages skipped");
        Assert.True(on.Transfer.BytesOnWire < off.Transfer.BytesOnWire / 3,
            $"hinted {on.Transfer.BytesOnWire} vs unhinted {off.Transfer.BytesOnWire} bytes");
        Assert.True(on.Hints!.CmdIds >= 2);
        Assert.Equal(on.Hints.BlocksReceived, on.Hints.BlocksApplied + on.Hints.BlocksDroppedStale);
        Assert.Equal(0, on.Hints.DeviceErrors);
    }

    public static TheoryData<string, string> BadHints => new()
    {
        { "outside", "outside guest RAM" },
        { "misaligned", "misaligned" },
        { "zero", "free block of 0 pages" },
        { "id-size", "command-id buffer of 2 bytes" },
        { "flood", "overflow" },
    };

    [Theory]
    [MemberData(nameof(BadHints))]
    public async Task MalformedHintsFromTheGuest_AreADeviceError_AndTheMigrationCompletesWithoutThem(string kind,
        string expected)
    {
        var guest = new GuestConfig
        {
            RamBytes = 64L << 20,
            Vcpus = 2,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Churn, Seed = 3, ChurnPagesPerSecond = 20000 },
        };
        var report = await MigrateAsync(guest, hints: true, vm =>
        {
            // A rogue driver: once hinting is under way, it queues garbage beside the real driver's buffers.
            var device = vm.HintDevice;
            Assert.True(
                SpinWait.SpinUntil(() => HintCommandId.IsRunId(device.ConfigCommandId), TimeSpan.FromSeconds(30)),
                "hinting never started");
            uint id = device.ConfigCommandId;
            long pages = vm.Ram.PageCount;
            switch (kind)
            {
                case "outside": device.AddBuffer(HintBuffer.Block(id, pages, 1024)); break;
                case "misaligned": device.AddBuffer(HintBuffer.Block(id, 1024 + 8, 1024)); break;
                case "zero": device.AddBuffer(HintBuffer.Block(id, 1024, 0)); break;
                case "id-size": device.AddBuffer(new HintBuffer(HintBufferKind.CommandId, id, Length: 2)); break;
                default:
                    // One more than the queue holds, added before a single kick, so the hint thread cannot drain
                    // the queue in between and hide the overflow.
                    var flood = new HintBuffer[device.QueueCapacity + 1];
                    Array.Fill(flood, HintBuffer.Block(id, 0, 1024));
                    Assert.True(device.AddBuffers(flood) < flood.Length, "the flood did not overflow the queue");
                    break;
            }
        },
        // Precopy goes on until the device has seen the garbage, however fast this machine migrates 64 MiB.
        holdPrecopy: vm => () => vm.HintDevice.Stats.DeviceErrors == 0);

        Assert.True(report.Status == MigrationStatus.Completed, report.Error);
        Assert.True(report.Verified);
        Assert.Equal(0, report.Verification.MismatchedPages);
        Assert.NotNull(report.Hints);
        Assert.True(report.Hints!.DeviceErrors >= 1);
        Assert.Contains(expected, report.Hints.DeviceError, StringComparison.Ordinal);
    }

    [Fact]
    public void ManualModeWithoutWaitOnAck_IsRefused_UnlessUnsafeIsAllowed()
    {
        using var vm = VirtualMachine.Boot(new GuestConfig
        {
            RamBytes = 16L << 20,
            Vcpus = 1,
            DirtyLogMode = DirtyLogMode.Manual,
            WaitOnAck = false,
        });
        var options = new MigrationOptions { Target = new Uri("http://127.0.0.1:1") };
        var ex = Assert.Throws<ArgumentException>(() => new PrecopyEngine(vm, options));
        Assert.Contains("R5", ex.Message, StringComparison.Ordinal);
        _ = new PrecopyEngine(vm, options with { AllowUnsafe = true });
        _ = new PrecopyEngine(vm, options with { Hints = false });
    }

    /// <summary>
    /// Keeps precopy going while <paramref name="hold"/> says so, however fast this machine migrates.
    /// </summary>
    private sealed class HoldWhile(IConvergencePolicy inner, Func<bool> hold) : IConvergencePolicy
    {
        public ConvergenceDecision Decide(RoundOutcome round)
        {
            var decision = inner.Decide(round);
            return decision is ConvergenceDecision.StopAndCopy && hold() ? ConvergenceDecision.Continue : decision;
        }
    }
}
