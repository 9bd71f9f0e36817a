using Migration.RaceFuzzer.Tests.Mutants;
using Migration.Shared.Balloon;
using Migration.Shared.Concurrency;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Shared.Transport;
using Migration.TestSupport;

namespace Migration.RaceFuzzer.Tests.Harness;

/// <summary>
/// One fuzzed migration: a 16 MiB guest running the churn workload on two vCPUs, its balloon driver, the device's hint
/// thread, the real precopy engine and two channel deliveries, all advanced one step at a time by a
/// <see cref="SeededScheduler"/>. Afterwards: the correctness invariant (checked by <see cref="InMemoryTarget"/>),
/// hinted pages never re-sent without a write (R6, <see cref="WriteClock"/>), and no actor crashed.
/// </summary>
public static class FuzzHarness
{
    private const long MaxSteps = 40_000;
    private const long GuestBytes = 16L << 20;

    public static FuzzOutcome Run(int seed, FuzzProfile profile, Mutant? mutant = null) =>
        new FuzzRun(seed, profile, mutant).Execute();

    /// <summary>The state of one seed's run; the actors below share it.</summary>
    private sealed class FuzzRun
    {
        private readonly int _seed;
        private readonly FuzzProfile _profile;
        private readonly Mutant? _mutant;
        private readonly Random _random;
        private readonly HostModel _host;
        private readonly ManualTimeProvider _time = new();
        private readonly WriteClock _clock = new(GuestBytes >> PageGeometry.PageShift);
        private bool _done;

        public FuzzRun(int seed, FuzzProfile profile, Mutant? mutant)
        {
            _seed = seed;
            _profile = profile;
            _mutant = mutant;
            _random = new Random(seed * 7919 + (int)profile);
            _host = HostModel.Draw(new Random(seed * 104729 + (int)profile), FreePageHintDevice.DefaultQueueCapacity);
        }

        public FuzzOutcome Execute()
        {
            using var scheduler = new SeededScheduler(_seed);
            var points = new SchedulingPoints { YieldPoint = scheduler.Yield, WaitPoint = SeededScheduler.WaitUntil };
            var threads = new ScheduledGuestThreads(scheduler, points, _host.StopLatency, () => _done, _time);
            var guestSeams = GuestSeams.Production with
            {
                Scheduling = points,
                ThreadHost = () => threads,
                DeviceThreads = NoDeviceThreads.Instance,
                StoreObserver = _clock.Stored,
                SyncObserver = _clock.Syncing,
                RunsInflateDriver = _profile == FuzzProfile.Balloon, // the hint profiles keep their schedules
            };
            guestSeams = _mutant?.Guest(guestSeams) ?? guestSeams;
            guestSeams = guestSeams with { HintDefences = new Recording(guestSeams.HintDefences, _clock) };

            var config = GuestConfigFor(_profile);
            using var vm = VirtualMachine.Boot(config, _time, guestSeams);
            if (_profile == FuzzProfile.Balloon)
            {
                WarmBalloon(vm);
            }
            else if (_profile == FuzzProfile.Reporting)
            {
                WarmReporting(vm);
            }
            else
            {
                for (int i = 0, warm = _random.Next(200, 3000); i < warm; i++)
                {
                    vm.Workloads[i % 2].Step(); // before the scheduler runs: no scheduling points are taken
                }
            }

            if (_profile == FuzzProfile.Throttled)
            {
                Throttle(vm);
            }

            InMemoryTarget? target = null;
            int minRounds = _random.Next(3, 11);
            // Drawn after every draw the other profiles make, so their schedules are those their seeds were found in.
            DeltaPageCache? deltas = _profile == FuzzProfile.Deltas
                ? new DeltaPageCache((long)PageGeometry.PageSize * DeltaPageCache.Ways << _random.Next(0, 9))
                : null;
            var options = new MigrationOptions
            {
                Target = new Uri("http://in-memory"),
                Channels = 2,
                PagesPerBatch = 128,
                DowntimeLimit = TimeSpan.FromDays(1000), // the fuzzer decides the rounds; convergence is not under test
                MaxRounds = minRounds + 1,
                Timeout = TimeSpan.FromDays(1),
                AllowUnsafe = _mutant?.AllowUnsafe ?? false,
                // the fuzzer decides the rounds, and the throttled profile draws its own throttle: no method here
                Converge = ConvergeMethod.None,
            };
            var targetGuest = _mutant?.Guest(GuestSeams.Production with { DeviceThreads = NoDeviceThreads.Instance })
                ?? GuestSeams.Production with { DeviceThreads = NoDeviceThreads.Instance };
            var engineSeams = EngineSeams.Production with
            {
                Transport = (source, counters) => target = new InMemoryTarget(source, counters,
                    _mutant?.OrdersChannels ?? true, targetGuest, deltas,
                    _mutant?.DeltaDefences(StandardDeltaDefences.Instance) ?? StandardDeltaDefences.Instance)
                {
                    PageQueued = _clock.Queued,
                    PageRead = _clock.Read,
                },
                Convergence = policy => new AtLeastRounds(policy, minRounds),
                Background = InlineWork.Instance, // the scheduler owns every thread that touches the guest
            };
            engineSeams = _mutant?.Engine(engineSeams) ?? engineSeams;

            MigrationReport? report = null;
            var engine = new PrecopyEngine(vm, options, engineSeams, time: _time);
            vm.Start(); // the vCPUs and the balloon driver become actors
            AddHintThread(scheduler, vm, threads);
            AddReplayingGuest(threads, vm);
            AddReclaim(threads, vm);
            if (_profile == FuzzProfile.Balloon)
            {
                AddBalloonHost(scheduler, vm);
                AddBalloonDevice(scheduler, vm, [BalloonVq.Inflate, BalloonVq.Deflate, BalloonVq.Events]);
            }
            else if (_profile == FuzzProfile.Reporting)
            {
                AddBalloonDevice(scheduler, vm, [BalloonVq.Reporting]);
            }
            else if (deltas is not null)
            {
                AddDeltaCacheHost(scheduler, deltas);
            }

            scheduler.Add("migration", () =>
            {
                report = engine.MigrateAsync().GetAwaiter().GetResult();
                _done = true;
                return false;
            }, steady: true);
            for (int c = 0; c < options.Channels; c++)
            {
                int channel = c;
                scheduler.Add($"channel{channel}", () =>
                    {
                        target?.Sinks.ElementAtOrDefault(channel)?.Step();
                        return !_done;
                    },
                    ready: () => _done || (target?.Sinks.ElementAtOrDefault(channel)?.HasWork ?? false));
            }

            scheduler.AfterStep = step =>
            {
                _time.Advance(TimeSpan.FromMicroseconds(50));
                if (_stoppedAt == long.MaxValue && threads.Stopped)
                {
                    _stoppedAt = step;
                }
            };
            bool finished = scheduler.Run(MaxSteps, () => _done);
            return Outcome(finished, scheduler, target, report);
        }

        private long _stoppedAt = long.MaxValue;

        /// <summary>
        /// Slows the vCPUs as convergence would: every one by a drawn share (auto-converge), or each under a drawn
        /// dirty-rate ceiling low enough to bite (the dirty limit); the fuzzer's clock moves 50 us a step, so a vCPU
        /// runs a 10 ms slice in about 200 steps and then sleeps its share.
        /// </summary>
        private void Throttle(VirtualMachine vm)
        {
            if (_random.Next(2) == 0)
            {
                vm.Throttle.SetShare(0.2 + (0.7 * _random.NextDouble()));
            }
            else
            {
                vm.Throttle.SetCeiling(100 + _random.Next(2000));
            }
        }

        private GuestConfig GuestConfigFor(FuzzProfile profile)
        {
            bool manual = profile is FuzzProfile.ManualWaitOnAck or FuzzProfile.ManualNoAck;
            // No statistics queue yet: its protocol has scripted tests (BalloonStatsTests, R19); fuzzing its buffer
            // among inflates and deflates is the next step.
            var balloon = profile switch
            {
                FuzzProfile.Balloon => new BalloonOptions
                {
                    Encoding = (BalloonEncoding)_random.Next(3),
                    MustTellHost = _random.Next(2) == 0,
                    Events = _random.Next(2) == 0,
                    Stats = false,
                },
                // Orders from 16 pages up, so a 16 MiB guest has many reportable blocks; a pace of 0-3 ms is 0-60
                // scheduler steps on the fuzzer's clock.
                FuzzProfile.Reporting => new BalloonOptions
                {
                    Stats = false,
                    Events = false,
                    Reporting = true,
                    ReportingOrder = _random.Next(4, 11),
                    ReportingDelayMs = _random.Next(4),
                    ReportingBudgetDivisor = _random.Next(1, 17),
                },
                _ => new BalloonOptions { Stats = false },
            };
            byte? poison = profile != FuzzProfile.Reporting ? 0xAA : _random.Next(3) switch
            {
                0 => null,
                1 => 0,
                _ => 0xAA,
            };
            return new GuestConfig
            {
                Balloon = balloon,
                RamBytes = GuestBytes,
                Vcpus = 2,
                PoisonValue = poison,
                DirtyLogMode = manual ? DirtyLogMode.Manual : DirtyLogMode.Eager,
                ClearChunkPages = 256,
                WaitOnAck = profile is FuzzProfile.EagerWaitOnAck or FuzzProfile.ManualWaitOnAck
                    or FuzzProfile.Balloon or FuzzProfile.Reporting or FuzzProfile.Throttled
                    or FuzzProfile.Deltas,
                // Smaller hint blocks than Linux's 4 MiB: a 16 MiB guest then has dozens of them in flight, not three.
                HintBlockOrder = profile == FuzzProfile.ManualNoAck ? 10 : _random.Next(4, 11),
                Workload = new WorkloadOptions
                {
                    Kind = WorkloadKind.Churn,
                    Seed = (ulong)_seed,
                    ChurnHeldBlocks = _random.Next(300, 650),
                    ChurnMaxOrder = profile == FuzzProfile.ManualNoAck || _random.Next(2) == 0
                        ? 2
                        : _random.Next(3, 11),
                },
            };
        }

        /// <summary>
        /// The hint thread (QEMU's iothread). It is sometimes descheduled by the host for a long stretch: hints pile up
        /// while the guest reuses blocks and the migration thread syncs, which is where the hint races live. On most
        /// seeds that is the vCPUs holding the host CPUs, so it ends once they are parked for the stop (after the host
        /// scheduler's wake-up delay); on the others it is unrelated load and lasts its drawn time. While the guest
        /// runs it takes one buffer per step; once the vCPUs are parked it drains a burst.
        /// </summary>
        private void AddHintThread(SeededScheduler scheduler, VirtualMachine vm, ScheduledGuestThreads threads)
        {
            long wakesAt = 0;
            double descheduleChance = _random.NextDouble() * 0.2;
            scheduler.Add(
                "hint thread",
                () =>
                {
                    int processed = 0;
                    int burst = threads.Stopped ? _host.HintBurst : 1;
                    while (processed < burst && vm.HintDevice.ProcessOne())
                    {
                        processed++;
                    }

                    if (_random.NextDouble() < descheduleChance)
                    {
                        wakesAt = scheduler.Steps + _random.Next(50, 3000);
                    }

                    return !_done;
                },
                ready: () => _done || (vm.HintDevice.Queued > 0 && (scheduler.Steps >= wakesAt
                    || (_host.HintThreadStarvedByGuest && scheduler.Steps - _host.WakeDelay >= _stoppedAt))));
        }

        /// <summary>
        /// The balloon profile's warm-up: the guest runs, then the host inflates the balloon to a drawn size (up to a
        /// quarter of RAM), driver and device taking turns, so most migrations start with a ballooned guest. On some
        /// seeds without MUST_TELL_HOST the host then lowers the target, the guest queues a deflate the device has not
        /// used yet and runs on, reusing those pages at once, before dirty logging starts. (With MUST_TELL_HOST an
        /// out-of-memory vCPU would wait for a device that does not run before the scheduler does.)
        /// </summary>
        private void WarmBalloon(VirtualMachine vm)
        {
            for (int i = 0, warm = _random.Next(200, 3000); i < warm; i++)
            {
                vm.Workloads[i % 2].Step(); // before the scheduler runs: no scheduling points are taken
            }

            vm.Balloon.SetTargetPages(_random.NextInt64((vm.Ram.PageCount / 4) + 1));
            for (int i = 0; i < 1000 && vm.Balloon.ActualPages != vm.Balloon.TargetPages; i++)
            {
                vm.InflateDriver.Step();
                vm.Balloon.ProcessOne();
            }

            if (!vm.InflateDriver.MustTellHost && _random.Next(2) == 0 && vm.Balloon.ActualPages > 0)
            {
                vm.Balloon.SetTargetPages(_random.NextInt64(vm.Balloon.ActualPages));
                vm.InflateDriver.Step();
                for (int i = 0, more = _random.Next(1, 400); i < more; i++)
                {
                    vm.Workloads[i % 2].Step();
                }
            }
        }

        /// <summary>
        /// The reporting profile's warm-up: the guest runs, reports what it has free (driver and device taking turns,
        /// the clock moving past the delay), then runs on, so it takes some reported blocks back and writes them before
        /// dirty logging starts (R22), and a request may still be queued when the migration begins.
        /// </summary>
        private void WarmReporting(VirtualMachine vm)
        {
            for (int i = 0, warm = _random.Next(200, 3000); i < warm; i++)
            {
                vm.Workloads[i % 2].Step(); // before the scheduler runs: no scheduling points are taken
            }

            var driver = vm.ReportingDriver!;
            for (int i = 0; i < 5000 && driver.Busy; i++)
            {
                _time.Advance(TimeSpan.FromMilliseconds(1));
                driver.Step();
                vm.Balloon.ProcessOne(BalloonVq.Reporting);
            }

            for (int i = 0, more = _random.Next(0, 2000); i < more; i++)
            {
                vm.Workloads[i % 2].Step();
                if (i % 97 == 0)
                {
                    driver.Step(); // a report queued now is used at setup or later
                }
            }
        }

        /// <summary>
        /// The management API: now and then the host sets a new balloon target (up to a quarter of RAM), during
        /// precopy and the stop alike. A refusal (the guest reported pressure during this migration) is the API's
        /// answer, not a failure.
        /// </summary>
        private void AddBalloonHost(SeededScheduler scheduler, VirtualMachine vm)
        {
            double rate = _random.NextDouble() * 0.01;
            long quarter = vm.Ram.PageCount / 4;
            scheduler.Add("balloon host", () =>
            {
                if (_random.NextDouble() < rate)
                {
                    try
                    {
                        vm.Balloon.SetTargetPages(_random.NextInt64(quarter + 1));
                    }
                    catch (InvalidOperationException)
                    {
                    }
                }

                return !_done;
            });
        }

        /// <summary>
        /// The balloon device's thread: it uses one buffer of a queue it picks (virtqueues are independent, so a
        /// deflate may be used before an older inflate), and is sometimes descheduled for a long stretch.
        /// </summary>
        private void AddBalloonDevice(SeededScheduler scheduler, VirtualMachine vm, BalloonVq[] queues)
        {
            long wakesAt = 0;
            bool midStep = false; // parked at a point inside the device (holding its lock): it must be let finish
            double descheduleChance = _random.NextDouble() * 0.2;
            scheduler.Add(
                "balloon device",
                () =>
                {
                    midStep = true;
                    vm.Balloon.ProcessOne(queues[_random.Next(queues.Length)]);
                    midStep = false;
                    if (_random.NextDouble() < descheduleChance)
                    {
                        wakesAt = scheduler.Steps + _random.Next(50, 3000);
                    }

                    return !_done;
                },
                ready: () => _done || midStep || (vm.Balloon.Queued > 0 && scheduler.Steps >= wakesAt));
        }

        /// <summary>
        /// The management API's live parameter: now and then the host resizes the delta cache (to nothing, to one set,
        /// up to 4 MiB) while the channels encode; the cache keeps what fits and the migration goes on.
        /// </summary>
        private void AddDeltaCacheHost(SeededScheduler scheduler, DeltaPageCache cache)
        {
            double rate = _random.NextDouble() * 0.002;
            scheduler.Add("delta cache host", () =>
            {
                if (_random.NextDouble() < rate)
                {
                    cache.Resize(_random.Next(4) == 0 ? 0 : (long)PageGeometry.PageSize * DeltaPageCache.Ways
                        << _random.Next(0, 9));
                }

                return !_done;
            });
        }

        /// <summary>
        /// A guest that misbehaves now and then: it replays a START with a command id it has seen (the device must not
        /// restart hinting for it, H3). It pounces when the device says STOP, the moment a replay could restart hinting
        /// inside a sync. Seeds without it model a well-behaved driver.
        /// </summary>
        private void AddReplayingGuest(ScheduledGuestThreads threads, VirtualMachine vm)
        {
            double replayRate = _random.Next(3) == 0 ? 0 : _random.NextDouble() * 0.3;
            var seenIds = new List<uint>();
            threads.AddActor("guest replay", () =>
            {
                uint id = vm.HintDevice.ConfigCommandId;
                if (HintCommandId.IsRunId(id) && !seenIds.Contains(id))
                {
                    seenIds.Add(id);
                }

                double rate = id == HintCommandId.Stop ? Math.Min(1, replayRate * 10) : replayRate;
                if (seenIds.Count > 0 && _random.NextDouble() < rate && vm.HintDevice.FreeSlots > 2)
                {
                    // Mostly the newest id it has seen (a late duplicate of its own START), sometimes an older one.
                    uint replay = _random.Next(10) < 7 ? seenIds[^1] : seenIds[_random.Next(seenIds.Count)];
                    vm.HintDevice.AddBuffer(HintBuffer.Id(replay));
                }

                return StepResult.Progress;
            });
        }

        /// <summary>
        /// Memory pressure: kswapd-style reclaim asks the balloon's shrinker for a block now and then.
        /// </summary>
        private void AddReclaim(ScheduledGuestThreads threads, VirtualMachine vm)
        {
            double reclaimRate = _random.NextDouble();
            threads.AddActor("reclaim", () =>
            {
                if (_random.NextDouble() < reclaimRate)
                {
                    vm.Kernel.Shrinker?.Invoke(0);
                }

                return StepResult.Progress;
            });
        }

        private FuzzOutcome Outcome(bool finished, SeededScheduler scheduler, InMemoryTarget? target,
            MigrationReport? report)
        {
            var violations = new List<string>();
            if (target is not null)
            {
                violations.AddRange(target.Violations);
            }

            violations.AddRange(_clock.Violations);
            violations.AddRange(scheduler.Errors);
            if (finished && report is { Status: not MigrationStatus.Completed } && (target?.Violations.Count ?? 0) == 0)
            {
                violations.Add($"migration {report.Status}: {report.Error}");
            }

            return new FuzzOutcome(_seed, _profile, _mutant, finished, scheduler.Steps, violations, report);
        }
    }

    /// <summary>Tells the R6 oracle which pages each applied hint cleared.</summary>
    private sealed class Recording(IHintDefences inner, WriteClock clock) : ForwardingDefences(inner)
    {
        public override long Apply(MigrationBitmap bitmap, long firstPfn, long pages)
        {
            long cleared = base.Apply(bitmap, firstPfn, pages);
            clock.Applied(firstPfn, pages);
            return cleared;
        }
    }

    /// <summary>
    /// Background work run on the calling actor, so no thread outside the scheduler touches the guest.
    /// </summary>
    private sealed class InlineWork : IBackgroundWork
    {
        public static readonly InlineWork Instance = new();

        public Task<T> Run<T>(Func<T> work, CancellationToken ct) => Task.FromResult(work());
    }
}
