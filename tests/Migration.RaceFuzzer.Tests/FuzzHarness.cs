using Migration.Shared.Balloon;
using Migration.Shared.Concurrency;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Reporting;
using Migration.Shared.Tests.TestSupport;
using Migration.Source.Precopy;

namespace Migration.RaceFuzzer.Tests;

/// <summary>The guest and device configurations the fuzzer explores.</summary>
public enum Family
{
    /// <summary>Eager dirty log, the driver may reuse a hinted block before the device used it (Linux's historical default).</summary>
    EagerNoAck,

    EagerWaitOnAck,

    /// <summary>Manual dirty log (KVM_CLEAR_DIRTY_LOG) with wait-on-ack: the configuration the engine allows.</summary>
    ManualWaitOnAck,

    /// <summary>Manual dirty log without wait-on-ack: refused unless --allow-unsafe (race R5).</summary>
    ManualNoAck,
}

/// <summary>What one seed did.</summary>
public sealed record FuzzOutcome(int Seed, Family Family, Mutation Mutation, bool Finished, long Steps, IReadOnlyList<string> Violations, MigrationReport? Report, long Shrunk)
{
    public bool Caught => Violations.Count > 0;

    /// <summary>Blocks the guest wrote between queueing and the device applying them (the precondition of R1-R5, R9, R10).</summary>
    public long ReusedBeforeApply { get; init; }

    /// <summary>Of those, blocks applied after a sync had started since the write: where a missing defence loses it.</summary>
    public long AppliedAfterSyncOfReuse { get; init; }

    public override string ToString() =>
        $"seed {Seed} ({Family}, mutation {Mutation}): {(Finished ? "finished" : "did not finish")} in {Steps} steps; " +
        (Caught ? string.Join(" | ", Violations) : "no violation") +
        $"  [replay: FUZZ_SEEDS={Seed} dotnet test tests/Migration.RaceFuzzer.Tests -c Release]";
}

/// <summary>
/// One fuzzed migration: a 16 MiB guest running the churn workload on two vCPUs, its balloon driver, the device's hint
/// thread, the real precopy engine and two channel deliveries, all advanced one step at a time by a
/// <see cref="SeededScheduler"/>. Afterwards: the correctness invariant (checked by <see cref="InMemoryTarget"/>),
/// hinted pages never re-sent without a write (race R6), and no actor crashed.
/// </summary>
public static class FuzzHarness
{
    private const long MaxSteps = 40_000;

    public static FuzzOutcome Run(int seed, Family family, Mutation mutation = Mutation.None)
    {
        var random = new Random(seed * 7919 + (int)family);
        // How the host runs QEMU's threads, drawn from a stream of its own (the guest's draws above are independent of it).
        var host = new Random(seed * 104729 + (int)family);
        var time = new ManualTimeProvider();
        using var scheduler = new SeededScheduler(seed);
        var violations = new List<string>();
        long pages = (16L << 20) >> PageGeometry.PageShift;

        // R6 bookkeeping: a logical clock over stores, sync starts, hint applications and page queueing.
        long clock = 0;
        long lastSyncStart = -1;
        var lastWrite = new long[pages];
        var hintedCleanAt = new long[pages];
        var queuedAt = new long[pages];

        var hooks = new RaceHooks
        {
            // Stopping is not instant: QEMU's completion takes its locks and kicks the vCPUs, which stop at their next
            // exit while the guest runs on. A few scheduling points on half the seeds, up to a few hundred on the others
            // (a busy host, vCPUs in long guest stretches).
            StopLatency = host.Next(2) == 0 ? host.Next(2, 16) : host.Next(16, 300),
            Mutations = mutation,
            YieldPoint = scheduler.Yield,
            WaitPoint = scheduler.WaitUntil,
            Stored = p => lastWrite[p] = Interlocked.Increment(ref clock),
            Syncing = starting =>
            {
                if (starting)
                {
                    lastSyncStart = Interlocked.Increment(ref clock);
                }
            },
        };

        bool manual = family is Family.ManualWaitOnAck or Family.ManualNoAck;
        var config = new GuestConfig
        {
            RamBytes = pages << PageGeometry.PageShift,
            Vcpus = 2,
            PoisonValue = 0xAA,
            DirtyLogMode = manual ? DirtyLogMode.Manual : DirtyLogMode.Eager,
            ClearChunkPages = 256,
            WaitOnAck = family is Family.EagerWaitOnAck or Family.ManualWaitOnAck,
            // Smaller hint blocks than Linux's 4 MiB: a 16 MiB guest then has dozens of them in flight, not three.
            HintBlockOrder = family == Family.ManualNoAck ? 10 : random.Next(4, 11),
            Workload = new WorkloadOptions { Kind = WorkloadKind.Churn, Seed = (ulong)seed, ChurnHeldBlocks = random.Next(300, 650),
                ChurnMaxOrder = family == Family.ManualNoAck || random.Next(2) == 0 ? 2 : random.Next(3, 11) },
        };

        using var vm = VirtualMachine.Boot(config, time, hooks);
        for (int i = 0, warm = random.Next(200, 3000); i < warm; i++)
        {
            vm.StepVcpu(i % 2);
        }

        InMemoryTarget? target = null;
        var blockQueuedAt = new long[pages];
        long reusedBeforeApply = 0;
        long appliedAfterSyncOfReuse = 0;
        vm.HintDevice.Added = b =>
        {
            if (b.Kind == HintBufferKind.FreeBlock && b.Pfn >= 0 && b.Pfn < pages)
            {
                blockQueuedAt[b.Pfn] = Interlocked.Increment(ref clock);
            }
        };
        vm.HintDevice.Applied = (first, count, cleared) =>
        {
            long queued = blockQueuedAt[first];
            long lastReuse = 0;
            for (long p = first; p < first + count; p++)
            {
                lastReuse = Math.Max(lastReuse, lastWrite[p] > queued ? lastWrite[p] : 0);
            }

            if (lastReuse > 0)
            {
                reusedBeforeApply++;
                if (lastSyncStart > lastReuse)
                {
                    appliedAfterSyncOfReuse++;
                }
            }

            for (long p = first; p < first + count; p++)
            {
                hintedCleanAt[p] = lastWrite[p] < lastSyncStart ? Interlocked.Increment(ref clock) : 0;
            }
        };

        int minRounds = random.Next(3, 11);
        var options = new MigrationOptions
        {
            Target = new Uri("http://in-memory"),
            Channels = 2,
            PagesPerBatch = 128,
            DowntimeLimit = TimeSpan.FromDays(1000), // the fuzzer decides the rounds (MinRounds); convergence is not under test
            MinRounds = minRounds,
            MaxRounds = minRounds + 1,
            Timeout = TimeSpan.FromDays(1),
            Hooks = hooks,
            ExternalHintThread = true,
            AllowUnsafe = family == Family.ManualNoAck,
            TransportFactory = (source, counters) =>
            {
                target = new InMemoryTarget(source, hooks, counters)
                {
                    PageQueued = p => queuedAt[p] = Interlocked.Increment(ref clock),
                    PageRead = p =>
                    {
                        long hinted = hintedCleanAt[p];
                        if (hinted > 0 && queuedAt[p] > hinted && lastWrite[p] < hinted && violations.Count < 20)
                        {
                            violations.Add($"R6: page {p} was sent again after its hint although the guest did not write it since");
                        }

                        hintedCleanAt[p] = 0;
                    },
                };
                return target;
            },
        };

        MigrationReport? report = null;
        bool done = false;
        var engine = new PrecopyEngine(vm, options, time: time);
        // Guest threads (vCPUs, the balloon driver, reclaim, a replaying guest) take no host CPU once the VM is stopped:
        // they are scheduled only to finish a step under way, which the stop waits for, and leave the CPUs to the
        // migration, hint and channel threads.
        void AddGuestThread(string name, Action step)
        {
            bool inStep = false;
            scheduler.Add(
                name,
                () =>
                {
                    inStep = true;
                    step();
                    inStep = false;
                    return !done;
                },
                ready: () => inStep || !vm.StoppedByScheduler);
        }

        AddGuestThread("vcpu0", () => vm.StepVcpu(0));
        AddGuestThread("vcpu1", () => vm.StepVcpu(1));
        AddGuestThread("balloon driver", () => vm.StepBalloonDriver());
        // The hint thread (QEMU's iothread) is sometimes descheduled by the host for a long stretch: hints pile up while
        // the guest reuses blocks and the migration thread syncs, which is where the hint races live. On most seeds that
        // is the guest's vCPU threads holding the host CPUs, so it ends once they are parked for the stop, after the
        // host scheduler's wake-up delay; on the others it is unrelated load and lasts its drawn time.
        long hintThreadWakesAt = 0;
        long stoppedAt = long.MaxValue;
        double descheduleChance = random.NextDouble() * 0.2;
        bool starvedByGuest = host.Next(4) != 0;
        int wakeDelay = host.Next(10);
        // QEMU's hint thread pops buffers in a loop while any are queued, each in microseconds. While the guest runs it
        // shares the host CPUs with the vCPUs and takes one buffer per step; once they are parked it has a CPU to itself
        // and one step drains up to a seed-drawn number of buffers (a send batch meanwhile costs a network round).
        int hintBurst = host.Next(1, FreePageHintDevice.DefaultQueueCapacity + 1);
        scheduler.Add(
            "hint thread",
            () =>
            {
                int processed = 0;
                int burst = vm.StoppedByScheduler ? hintBurst : 1;
                while (processed < burst && vm.HintDevice.ProcessOne())
                {
                    processed++;
                }

                if (random.NextDouble() < descheduleChance)
                {
                    hintThreadWakesAt = scheduler.Steps + random.Next(50, 3000);
                }

                return !done;
            },
            ready: () => done || (vm.HintDevice.Queued > 0
                && (scheduler.Steps >= hintThreadWakesAt || (starvedByGuest && scheduler.Steps - wakeDelay >= stoppedAt))));
        // A guest that misbehaves now and then: it replays a START with a command id it has seen (the device must not
        // restart hinting for it, H3). Seeds without it model a well-behaved driver.
        double replayRate = random.Next(3) == 0 ? 0 : random.NextDouble() * 0.3;
        var seenIds = new List<uint>();
        AddGuestThread("guest replay", () =>
        {
            uint id = vm.HintDevice.ConfigCommandId;
            if (HintCommandId.IsRunId(id) && !seenIds.Contains(id))
            {
                seenIds.Add(id);
            }

            // It pounces when the device says STOP (the moment a replay could restart hinting inside a sync).
            double rate = id == HintCommandId.Stop ? Math.Min(1, replayRate * 10) : replayRate;
            if (seenIds.Count > 0 && random.NextDouble() < rate && vm.HintDevice.FreeSlots > 2 && !vm.StoppedByScheduler)
            {
                // Mostly the newest id it has seen (a late duplicate of its own START), sometimes an older one.
                uint replay = random.Next(10) < 7 ? seenIds[^1] : seenIds[random.Next(seenIds.Count)];
                vm.HintDevice.AddBuffer(HintBuffer.Id(replay));
            }
        });

        // Memory pressure: kswapd-style reclaim asks the balloon's shrinker for a block now and then (seed-drawn rate).
        double reclaimRate = random.NextDouble();
        AddGuestThread("reclaim", () =>
        {
            if (random.NextDouble() < reclaimRate)
            {
                vm.StepReclaim();
            }
        });
        scheduler.Add("migration", () => { report = engine.MigrateAsync().GetAwaiter().GetResult(); done = true; return false; }, steady: true);
        for (int c = 0; c < options.Channels; c++)
        {
            int channel = c;
            scheduler.Add($"channel{channel}", () => { (target?.Sinks.ElementAtOrDefault(channel))?.Step(); return !done; },
                ready: () => done || (target?.Sinks.ElementAtOrDefault(channel)?.HasWork ?? false));
        }

        scheduler.AfterStep = step =>
        {
            time.Advance(TimeSpan.FromMicroseconds(50));
            if (stoppedAt == long.MaxValue && vm.StoppedByScheduler)
            {
                stoppedAt = step;
            }
        };
        bool finished = scheduler.Run(MaxSteps, () => done);
        violations.AddRange(scheduler.Errors);
        if (target is not null)
        {
            violations.InsertRange(0, target.Violations);
        }

        if (finished && report is { Status: not "completed" } && (target?.Violations.Count ?? 0) == 0)
        {
            violations.Add($"migration {report.Status}: {report.Error}");
        }

        return new FuzzOutcome(seed, family, mutation, finished, scheduler.Steps, violations, report, vm.BalloonDriver.ShrunkBlocks)
        {
            ReusedBeforeApply = reusedBeforeApply,
            AppliedAfterSyncOfReuse = appliedAfterSyncOfReuse,
        };
    }
}
