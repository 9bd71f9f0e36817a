using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Migration.Protocol;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Machine;
using Migration.Target.Receiving;

namespace Migration.Target.Tests.Receiving;

/// <summary>
/// What Begin makes for a migration, and when: the per-page tables in no time whatever the guest's size, the room for
/// the allocator's copy beside Begin rather than in it, and all of it let go once the migration is decided.
/// </summary>
public sealed class ReceivingTablesTests
{
    private static IncomingMigration Receiving(long ramBytes) =>
        new("m", new GuestConfig { RamBytes = ramBytes, Vcpus = 1 }, "{}", MigrationOwner.New(null),
            GuestRam.Allocate(ramBytes), TimeProvider.System);

    [Fact]
    public void AMigrationOfALargeGuest_TakesAlmostNothingFromTheHeap_UntilItsPagesArrive()
    {
        // 64 GiB: 16 Mi pages. Tables of 13 bytes a page on the heap were 208 MiB, zeroed (every page of them
        // touched) inside Begin, and the allocator's room 256 MiB more, touched too.
        long before = GC.GetAllocatedBytesForCurrentThread();
        using var migration = Receiving(64L << 30);
        long taken = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.True(taken < 1 << 20, $"{taken} bytes allocated for a 64 GiB guest's migration");
    }

    [Fact]
    public void TheAllocatorsRoom_IsMadeOnce_ByWhicheverComesFirst()
    {
        using var migration = Receiving(64L << 20);
        migration.PrepareAllocator(); // beside Begin
        var room = migration.Allocator;
        Assert.Equal(migration.Ram.PageCount, room.PageCount);
        Assert.Same(room, migration.Allocator);
    }

    [Fact]
    public void ADecidedMigration_LetsItsTablesGo()
    {
        IncomingMigration? received = null;
        var switchover = new ScriptedSwitchover
        {
            PrepareResult = (migration, _) =>
            {
                received = migration;
                var vm = VirtualMachine.Boot(new GuestConfig { RamBytes = 16L << 20, Vcpus = 1 });
                return (new CompleteReply { Provisional = true },
                    new PendingConfirm(vm, null, null, vm.Kernel.SnapshotDescriptors()));
            },
        };
        using var target = Targets.New(switchover);
        var owner = target.BeginAs("a");
        target.Complete(new CompleteRequest { MigrationId = "a", ResumeFirst = true }, owner);
        var free = new PageBitmap(received!.Ram.PageCount); // none free: a digest for every page
        Assert.Equal(received.Ram.PageCount, received.ReceivedDigests(free).LongLength);

        var reply = target.Confirm(new ConfirmRequest { MigrationId = "a", SelfCheckOk = true }, owner);

        Assert.True(reply.Verified);
        Assert.Throws<ObjectDisposedException>(() => received.ReceivedDigests(free));
        switchover.Prepared!.Dispose();
    }

    [Fact]
    public async Task BeginsReply_DoesNotWaitForItsLogLine()
    {
        // A fresh target's first log line of a kind compiles the logger's path for its arguments: beside Begin, not in
        // it. Here the line never gets written until the test lets it.
        using var release = new ManualResetEventSlim();
        var logger = new HeldLogger(eventId: 1, release);
        var options = TargetOptions.Defaults;
        using var target = new IncomingMigrations(options, new ScriptedSwitchover(),
            new TargetReportWriter(options, NullLogger<TargetReportWriter>.Instance), new StillRunning(), logger,
            new FakeTimeProvider());

        var begin = Task.Run(() => target.BeginAs("a"));

        await begin.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(logger.Held.Wait(TimeSpan.FromSeconds(20)), "the line is still written");
        release.Set();
    }

    [Fact]
    public async Task ARehearsalThatComesBeforeTheScratchGuestIsReady_WaitsForIt()
    {
        // The scratch guest is prepared beside Begin; a rehearsal that found it missing timed the round trip without
        // the rebuild and resume, and the estimate came out short.
        using var migration = Receiving(16L << 20);
        var switchover = new Switchover(TargetOptions.Defaults, NullLogger<Switchover>.Instance);
        var rehearsal = Task.Run(() => switchover.Rehearse(migration,
            new CompleteRequest { MigrationId = "m", Rehearsal = true, ResumeFirst = true }));
        await Task.Delay(TimeSpan.FromMilliseconds(300));
        migration.UseProbe(RestoreProbe.TryPrepare(migration.Config));

        var (reply, running) = await rehearsal.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.NotNull(running);
        running.Dispose();
        Assert.True(reply.PhasesMs.ContainsKey("resume"), "the scratch guest was rebuilt and started");
    }

    /// <summary>A logger that holds the writer of one event until released.</summary>
    private sealed class HeldLogger(int eventId, ManualResetEventSlim release) : ILogger<IncomingMigrations>
    {
        public ManualResetEventSlim Held { get; } = new();

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId id, TState state, Exception? exception,
            Func<TState, Exception?, string> formatter)
        {
            if (id.Id == eventId)
            {
                Held.Set();
                release.Wait(TimeSpan.FromSeconds(30));
            }
        }
    }
}
