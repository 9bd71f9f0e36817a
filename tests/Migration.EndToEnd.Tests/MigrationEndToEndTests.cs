using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Shared.Transport;
using Migration.Source.Cli;
using Migration.TestSupport;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Real target processes on free loopback ports; the source engine runs in the test process against them.
/// Small guests keep each case to a few seconds.
/// </summary>
public class MigrationEndToEndTests
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    // The last column: the target rehashes all in-use RAM at switchover (--verify full) instead of using the digests it
    // took while receiving; both must verify the same guests.
    // And the switchover order asked for: resume first (the default; digests compared after the target resumed) or
    // verify first (everything compared inside the downtime).
    public static TheoryData<WorkloadKind, DirtyLogMode, int, bool, byte?, bool, bool> Matrix => new()
    {
        { WorkloadKind.Idle, DirtyLogMode.Eager, 1, false, null, false, true },
        { WorkloadKind.Memhog, DirtyLogMode.Manual, 2, true, null, false, false },
        { WorkloadKind.Busy, DirtyLogMode.Eager, 3, true, null, false, true },
        { WorkloadKind.Busy, DirtyLogMode.Manual, 2, false, (byte)0xAA, true, true },
        { WorkloadKind.Churn, DirtyLogMode.Eager, 2, false, (byte)0x5A, false, false },
        { WorkloadKind.Churn, DirtyLogMode.Manual, 1, true, null, true, false },
        { WorkloadKind.Ab, DirtyLogMode.Eager, 2, true, null, false, true },
        { WorkloadKind.Ab, DirtyLogMode.Manual, 3, false, null, false, false },
    };

    [Theory]
    [MemberData(nameof(Matrix))]
    public async Task Migration_CompletesVerified_WithNoMismatchedPages(WorkloadKind kind, DirtyLogMode mode,
        int channels, bool lz4, byte? poison, bool fullRehash, bool resumeFirst)
    {
        string targetReport = Path.GetTempFileName();
        try
        {
            string[] args = ["--once", "--run-after", "0.3", "--report", targetReport,
                "--verify", fullRehash ? "full" : "incremental"];
            await using var target = await TargetProcess.StartAsync(args, StartTimeout);
            var guest = new GuestConfig
            {
                RamBytes = 64L << 20,
                Vcpus = 2,
                DirtyLogMode = mode,
                ClearChunkPages = 4096, // several chunks in a small guest, so chunk clearing is exercised
                PoisonValue = poison,
                Workload = new WorkloadOptions { Kind = kind, Seed = 5, AbMib = 8, BusyDirtyPagesPerSecond = 4000 },
            };
            var report = await MigrateAsync(guest, new MigrationOptions
            {
                Target = target.Address,
                Channels = channels,
                Compression = lz4 ? Compression.Lz4 : Compression.None,
                ResumeFirst = resumeFirst,
                // This matrix checks memory, not downtime: a limit a loaded machine cannot miss (a run at a load
                // average of 28 measured a 1.6 s switchover and rightly refused to stop), and three rounds at least,
                // so pages still go again after round 0 as they would under the default limit.
                DowntimeLimit = TimeSpan.FromSeconds(5),
            }, rounds: 3);

            Assert.True(report.Status == MigrationStatus.Completed, $"{report.Status}: {report.Error}");
            // A guest with a poison value verifies first whatever is asked: the target must see its free pages hold
            // the poison (R12), which reads its RAM before the guest runs.
            bool resumedFirst = resumeFirst && poison is null;
            Assert.Equal(resumedFirst, report.Timing.AfterResumePhasesMs.ContainsKey("digests"));
            Assert.Equal(!resumedFirst, report.Timing.DowntimePhasesMs.ContainsKey("sourceDigests"));
            Assert.True(report.Verified);
            // Every millisecond of the downtime is in a named phase, and the estimate is split the same way.
            Assert.Equal(report.Timing.DowntimeMs, report.Timing.DowntimePhasesMs.Values.Sum(), 0.01);
            Assert.Equal(report.Timing.ExpectedDowntimeMs, report.Timing.ExpectedDowntimePhasesMs.Values.Sum(), 0.01);
            Assert.True(report.Timing.ExpectedDowntimePhasesMs["complete"] > 0); // the rehearsed round trip counted
            Assert.Equal(0, report.Verification.MismatchedPages);
            Assert.True(report.Verification.PagesCompared > 0);
            Assert.StartsWith("ok", report.Verification.GuestSelfCheck, StringComparison.Ordinal);
            Assert.Contains(report.Rounds, r => r.Final);
            Assert.Equal(0, await target.WaitForExitAsync(TimeSpan.FromSeconds(30)));
            Assert.Contains(target.Output, l => l.StartsWith("run-after: self-check ok", StringComparison.Ordinal));

            // The target's report is written after its reply, and the process waits for it before exiting.
            using var written = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(targetReport));
            Assert.Equal("resumed", written.RootElement.GetProperty("status").GetString());
            Assert.True(written.RootElement.GetProperty("process").GetProperty("peakRssBytes").GetInt64() > 0);
            if (lz4 && kind != WorkloadKind.Idle)
            {
                Assert.True(report.Transfer.PagesCompressed > 0 || report.Transfer.PagesNormal > 0);
            }
        }
        finally
        {
            File.Delete(targetReport);
        }
    }

    [Fact]
    public async Task Ab_TargetRamImage_PassesQemusCheck()
    {
        string dump = Path.GetTempFileName();
        try
        {
            await using var target = await TargetProcess.StartAsync(["--once", "--dump-ram", dump], StartTimeout);
            var guest = new GuestConfig
            {
                RamBytes = 32L << 20,
                Vcpus = 1,
                Workload = new WorkloadOptions { Kind = WorkloadKind.Ab, AbMib = 8 },
            };
            var report = await MigrateAsync(guest, new MigrationOptions { Target = target.Address, Channels = 2 });
            Assert.Equal(MigrationStatus.Completed, report.Status);
            await target.WaitForExitAsync(TimeSpan.FromSeconds(30));

            using var image = GuestRam.Allocate(guest.RamBytes);
            byte[] bytes = await File.ReadAllBytesAsync(dump);
            Assert.Equal(guest.RamBytes, bytes.Length);
            bytes.CopyTo(image.Pages(0, (int)image.PageCount));
            Assert.Null(AbWorkload.Verify(image, WorkloadOptions.AbFirstPfn, guest.Workload.AbPages));
            // The image is the guest's, not a blank file: its kernel's structures live in RAM. (The A/B byte itself
            // wraps every 256 passes, so it reads 0 in one dump in 256.)
            Assert.Contains(bytes, b => b != 0);
        }
        finally
        {
            File.Delete(dump);
        }
    }

    [Fact]
    public async Task TargetKilledMidMigration_SourceGuestKeepsRunning_AndARetrySucceeds()
    {
        var guest = new GuestConfig
        {
            RamBytes = 128L << 20,
            Vcpus = 2,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Busy, Seed = 9, BusyDirtyPagesPerSecond = 2000 },
        };
        using var vm = VirtualMachine.Boot(guest);
        vm.Start();
        SpinWait.SpinUntil(() => vm.IsWarm, TimeSpan.FromSeconds(30));

        await using (var doomed = await TargetProcess.StartAsync([], StartTimeout))
        {
            // A slow link keeps round 0 going long enough to kill the target in the middle of it.
            var engine = new PrecopyEngine(vm, new MigrationOptions
            {
                Target = doomed.Address,
                Channels = 2,
                MaxBandwidthBytesPerSecond = 40e6,
            });
            var migration = engine.MigrateAsync();
            await Task.Delay(700);
            doomed.Kill();
            var failed = await migration.WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Equal(MigrationStatus.Failed, failed.Status);
            Assert.False(string.IsNullOrEmpty(failed.Error));
        }

        Assert.Equal(VmRunState.Running, vm.State);
        long writes = vm.PageWrites;
        Assert.True(SpinWait.SpinUntil(() => vm.PageWrites > writes + 100, TimeSpan.FromSeconds(20)),
            "source guest stopped running");

        await using var target = await TargetProcess.StartAsync(["--once"], StartTimeout);
        var retry = await new PrecopyEngine(vm, new MigrationOptions { Target = target.Address, Channels = 2 })
            .MigrateAsync()
            .WaitAsync(TimeSpan.FromSeconds(120));
        Assert.True(retry.Status == MigrationStatus.Completed, retry.Error);
        Assert.True(retry.Verified);
        Assert.Equal(0, retry.Verification.MismatchedPages);
        Assert.Equal(VmRunState.Paused, vm.State); // this copy never runs again; its owner shuts it down
    }

    [Fact]
    public async Task Cancel_EndsCancelled_GuestKeepsRunning_AndTheTargetDiscardsThePartialGuest()
    {
        await using var target = await TargetProcess.StartAsync([], StartTimeout);
        using var vm = VirtualMachine.Boot(new GuestConfig
        {
            RamBytes = 128L << 20,
            Vcpus = 2,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Busy, Seed = 4, BusyDirtyPagesPerSecond = 2000 },
        });
        vm.Start();
        using var cts = new CancellationTokenSource();
        // 20 MB/s: round 0 alone takes seconds, so the cancel lands mid-round.
        var migration = new PrecopyEngine(vm,
                new MigrationOptions { Target = target.Address, MaxBandwidthBytesPerSecond = 20e6 })
            .MigrateAsync(cts.Token);
        using var channel = ControlChannel.Create(target.Address, TransportSecurity.None);
        var client = new Protocol.Migration.MigrationClient(channel);
        // Cancel once the target has the migration (a fixed delay lost that race on a loaded machine).
        var begun = System.Diagnostics.Stopwatch.StartNew();
        while ((await client.StatusAsync(new Protocol.StatusRequest())).State == "idle"
            && begun.Elapsed < TimeSpan.FromSeconds(30))
        {
            await Task.Delay(50);
        }

        await Task.Delay(300);
        await cts.CancelAsync();
        var report = await migration.WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(MigrationStatus.Cancelled, report.Status);
        Assert.False(report.Verified);
        Assert.Equal(VmRunState.Running, vm.State);
        Assert.False(vm.DirtyLog.Enabled);
        var status = await client.StatusAsync(new Protocol.StatusRequest());
        Assert.Equal("failed", status.State);
        Assert.Contains(report.MigrationId!, string.Join(' ', target.Output), StringComparison.Ordinal); // logged why

        // The target takes the next attempt, which completes.
        var retry = await new PrecopyEngine(vm, new MigrationOptions { Target = target.Address })
            .MigrateAsync()
            .WaitAsync(TimeSpan.FromSeconds(120));
        Assert.True(retry.Status == MigrationStatus.Completed, retry.Error);
        Assert.True(retry.Verified);
    }

    [Fact]
    public async Task NoTarget_FailsCleanly_AndGuestKeepsRunning()
    {
        using var vm = VirtualMachine.Boot(new GuestConfig
        {
            RamBytes = 16L << 20,
            Vcpus = 1,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Churn },
        });
        vm.Start();
        int port;
        using (var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0))
        {
            l.Start();
            port = ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
        }

        var report = await new PrecopyEngine(vm, new MigrationOptions { Target = new Uri($"http://127.0.0.1:{port}") })
            .MigrateAsync()
            .WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.Contains("Unavailable", report.Error, StringComparison.Ordinal);
        Assert.Equal(VmRunState.Running, vm.State);
    }

    [Fact]
    public async Task NeverConverging_FailsWithAClearReason()
    {
        await using var target = await TargetProcess.StartAsync([], StartTimeout);
        var guest = new GuestConfig
        {
            RamBytes = 64L << 20,
            Vcpus = 2,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Churn, Seed = 2 },
        };
        // 2 MB/s cannot keep up with an unthrottled churn guest under a 1 ms downtime limit.
        var report = await MigrateAsync(guest, new MigrationOptions
        {
            Target = target.Address,
            MaxRounds = 3,
            DowntimeLimit = TimeSpan.FromMilliseconds(1),
            MaxBandwidthBytesPerSecond = 20e6,
        });
        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.Contains("did not converge", report.Error, StringComparison.Ordinal);
    }

    /// <param name="rounds">With a value, precopy runs at least that many rounds (<see cref="AtLeastRounds"/>).</param>
    private static async Task<MigrationReport> MigrateAsync(GuestConfig guest, MigrationOptions options,
        int? rounds = null)
    {
        using var vm = VirtualMachine.Boot(guest);
        vm.Start();
        Assert.True(SpinWait.SpinUntil(() => vm.IsWarm, TimeSpan.FromSeconds(60)), "guest did not warm up");
        Thread.Sleep(200);
        var seams = rounds is int atLeast
            ? EngineSeams.Production with { Convergence = policy => new AtLeastRounds(policy, atLeast) }
            : EngineSeams.Production;
        return await new PrecopyEngine(vm, options, seams).MigrateAsync().WaitAsync(TimeSpan.FromSeconds(120));
    }
}
