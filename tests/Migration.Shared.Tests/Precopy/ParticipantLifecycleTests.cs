using Migration.Protocol;
using Migration.Shared.Devices;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Precopy;

/// <summary>
/// What the engine promises every precopy participant (H1, H2, H6), checked on a real guest and the real engine with
/// a target in the test process: logging is on before Setup; every sync, the setup sync and the final one included,
/// is wrapped in BeforeSync/AfterSync; Complete follows the last pages; Cleanup comes exactly once, whatever the
/// outcome.
/// </summary>
public sealed class ParticipantLifecycleTests
{
    private static VirtualMachine WarmGuest() => WarmGuests.Idle(dirtyPagesPerSecond: 2000);

    private static (MigrationReport Report, Recorder Recorder, FakeTransport Transport) Migrate(VirtualMachine vm,
        Func<CompleteRequest, CompleteReply>? complete = null, bool hints = true)
    {
        Recorder? recorder = null;
        FakeTransport? transport = null;
        var seams = EngineSeams.Production with
        {
            // the hint device's calls (the balloon device, the other participant, joins every migration)
            Participant = p => p == vm.HintDevice ? recorder = new Recorder(p, vm.DirtyLog) : p,
            Transport = (source, counters) =>
            {
                transport = new FakeTransport(source, counters);
                if (complete is not null)
                {
                    transport.OnComplete = complete;
                }

                return transport;
            },
        };
        var options = MigrationOptions.Defaults with
        {
            Target = new Uri("http://in-process"),
            Hints = hints,
            Channels = 2,
        };
        var report = new PrecopyEngine(vm, options, seams).MigrateAsync()
            .WaitAsync(TimeSpan.FromSeconds(60))
            .GetAwaiter()
            .GetResult();
        return (report, recorder!, transport!);
    }

    [Fact]
    public void ACompletedMigration_WrapsEverySync_AndCleansUpOnce()
    {
        using var vm = WarmGuest();
        var (report, recorder, _) = Migrate(vm);

        Assert.True(report.Status == MigrationStatus.Completed, report.Error);
        var calls = recorder.Calls;
        Assert.Equal("setup (logging on)", calls[0]);
        // the setup sync, one per precopy round; the final round's sync is the last
        int syncs = report.Rounds.Count + 1;
        var wrapped = calls.Skip(1).Take(2 * syncs).ToList();
        for (int i = 0; i < syncs; i++)
        {
            bool last = i == syncs - 1;
            Assert.Equal($"before sync (running {!last}, {i} syncs done)", wrapped[2 * i]);
            Assert.Equal($"after sync (running {!last}, {i + 1} syncs done)", wrapped[(2 * i) + 1]);
        }

        Assert.Equal(["complete", "cleanup Completed", "report"], calls.Skip(1 + (2 * syncs)));
        Assert.Equal(VmRunState.Paused, vm.State); // the target runs it now
        Assert.False(vm.DirtyLog.Enabled);
    }

    [Fact]
    public void AFailedHandover_CleansUpOnce_AndTheGuestRunsOn()
    {
        using var vm = WarmGuest();
        var (report, recorder, transport) = Migrate(vm, _ => new CompleteReply { Error = "digests differ" });

        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.Contains("digests differ", report.Error, StringComparison.Ordinal);
        Assert.Single(recorder.Calls, c => c.StartsWith("cleanup", StringComparison.Ordinal));
        Assert.Contains("cleanup Failed", recorder.Calls);
        Assert.Contains(transport.Calls, c => c.StartsWith("cancel: target did not verify", StringComparison.Ordinal));
        Assert.Equal(VmRunState.Running, vm.State);
        Assert.False(vm.DirtyLog.Enabled);
    }

    [Fact]
    public void WithoutHinting_TheDeviceSitsOut_AndTheReportHasNoHintsSection()
    {
        using var vm = WarmGuest();
        var (report, recorder, _) = Migrate(vm, hints: false);

        Assert.True(report.Status == MigrationStatus.Completed, report.Error);
        Assert.Equal(["setup (logging on)"], recorder.Calls); // declined: nothing else, not even cleanup or report
        Assert.Null(report.Hints);
    }

    /// <summary>Wraps the VM's participant and writes down each call with what the log looked like then.</summary>
    private sealed class Recorder(IPrecopyParticipant inner, DirtyLog log) : IPrecopyParticipant
    {
        public List<string> Calls { get; } = [];

        public bool Setup(PrecopySetup setup)
        {
            Calls.Add($"setup (logging {(log.Enabled ? "on" : "off")})");
            return inner.Setup(setup);
        }

        public void BeforeSync(bool vmRunning)
        {
            Calls.Add($"before sync (running {vmRunning}, {log.Syncs - _syncsAtSetup} syncs done)");
            inner.BeforeSync(vmRunning);
        }

        public void AfterSync(bool vmRunning)
        {
            Calls.Add($"after sync (running {vmRunning}, {log.Syncs - _syncsAtSetup} syncs done)");
            inner.AfterSync(vmRunning);
        }

        public void Complete()
        {
            Calls.Add("complete");
            inner.Complete();
        }

        public void Cleanup(MigrationStatus outcome)
        {
            Calls.Add($"cleanup {outcome}");
            inner.Cleanup(outcome);
        }

        public IReadOnlyList<IMigrationStats> MigrationStats()
        {
            Calls.Add("report");
            return inner.MigrationStats();
        }

        private readonly long _syncsAtSetup = log.Syncs;
    }
}
