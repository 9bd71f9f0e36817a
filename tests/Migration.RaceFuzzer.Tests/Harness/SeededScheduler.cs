namespace Migration.RaceFuzzer.Tests.Harness;

/// <summary>
/// Runs actors (vCPUs, the balloon driver, the hint thread, the migration thread, channel deliveries) one at a time,
/// in an order drawn from a seed. Each actor is a real thread, but only the one holding the baton runs: it runs until
/// its next scheduling point (<see cref="Yield"/>, called by the components through their scheduling points), then
/// draws the next actor itself and hands it the baton. The same seed gives the same interleaving, so any failure
/// replays.
/// </summary>
/// <remarks>
/// <para>Actors get seed-drawn weights, and at a seed-drawn rate a priority change point (as in PCT, Coyote's
/// probabilistic concurrency testing) gives one actor a new weight: some seeds starve an actor for long stretches (the
/// interleavings where races live) rather than every seed looking like a fair round-robin.</para>
/// <para>The handoff is direct: the actor that parks makes the draw and wakes the next one, and when the draw picks
/// the same actor it just goes on, with no thread switch at all. A central scheduler thread would cost two wake-ups per
/// step. The draws are the same either way, so a seed replays the same interleaving.</para>
/// </remarks>
internal sealed class SeededScheduler : IDisposable
{
    private static readonly TimeSpan StallTimeout = TimeSpan.FromSeconds(60);

    [ThreadStatic]
    private static Actor? t_current;

    private readonly Random _random;
    private readonly Random _yieldRandom;
    private readonly double _yieldProbability;
    private readonly double _changeRate;
    private readonly List<Actor> _actors = [];
    private readonly ManualResetEventSlim _over = new();
    private volatile bool _stopping;
    private Actor? _lastParked;
    private Actor? _running;
    private long _maxSteps;
    private Func<bool> _finished = () => true;
    private long _steps;

    public SeededScheduler(int seed)
    {
        _random = new Random(seed);
        _yieldRandom = new Random(~seed);
        // Not every scheduling point switches actors: fewer hand-offs per seed, and runs of several steps by one actor.
        _yieldProbability = 0.15 + (0.85 * _random.NextDouble());
        _changeRate = 1.0 / (100 + _random.Next(2000));
    }

    /// <summary>Scheduling points taken so far.</summary>
    public long Steps => Interlocked.Read(ref _steps);

    /// <summary>
    /// Called after every step with the step number (the harness advances its clock and watches the stop).
    /// </summary>
    public Action<long>? AfterStep { get; set; }

    /// <summary>Errors actors died with (a bug in a component shows up here, not as a hang).</summary>
    public IEnumerable<string> Errors => _actors.Where(a => a.Error is not null).Select(a => $"{a.Name}: {a.Error}");

    /// <summary>
    /// Adds an actor whose <paramref name="step"/> returns false when it has nothing more to do, ever. It is only
    /// scheduled while <paramref name="ready"/> holds (an idle channel, an empty hint queue), and it runs at a
    /// seed-drawn speed unless <paramref name="steady"/>.
    /// </summary>
    public void Add(string name, Func<bool> step, Func<bool>? ready = null, bool steady = false)
    {
        _actors.Add(new Actor(this, name, step, steady ? 1 : DrawWeight()) { Ready = ready, Steady = steady });
    }

    /// <summary>
    /// Parks the running actor until <paramref name="ready"/> holds; other actors run meanwhile. Conditions (and the
    /// actors' ready predicates) are evaluated by whichever actor makes the next draw, while actors may hold locks:
    /// they must not lock.
    /// </summary>
    public static void WaitUntil(Func<bool> ready)
    {
        if (t_current is not { } actor)
        {
            SpinWait.SpinUntil(ready);
            return;
        }

        while (!ready())
        {
            actor.Waiting = ready;
            actor.Park(excludeNext: false);
            actor.Waiting = null;
        }
    }

    /// <summary>
    /// The scheduling point: always at a phase boundary, with the seed's probability at a fine-grained point. A no-op
    /// on threads that are not actors (set-up code, the test itself).
    /// </summary>
    public void Yield(bool phaseBoundary)
    {
        // Only the running actor draws from _yieldRandom, so the sequence (and the run) stays a function of the seed.
        if (t_current is { } actor && (phaseBoundary || _yieldRandom.NextDouble() < _yieldProbability))
        {
            // At a phase boundary someone else runs next: a race window never closes unobserved.
            actor.Park(excludeNext: phaseBoundary);
        }
    }

    /// <summary>
    /// Runs until <paramref name="finished"/> holds or <paramref name="maxSteps"/> is reached. Returns whether it
    /// finished.
    /// </summary>
    public bool Run(long maxSteps, Func<bool> finished)
    {
        _maxSteps = maxSteps;
        _finished = finished;
        foreach (var actor in _actors)
        {
            actor.Start();
        }

        if (DrawNext() is { } first)
        {
            Hand(first);
            long seen = -1;
            var quiet = System.Diagnostics.Stopwatch.StartNew();
            while (!_over.Wait(TimeSpan.FromMilliseconds(200)))
            {
                if (Steps != seen)
                {
                    seen = Steps;
                    quiet.Restart();
                }
                else if (quiet.Elapsed > StallTimeout)
                {
                    // An actor blocked outside a scheduling point (a plain lock held by a parked actor): a harness bug.
                    throw new TimeoutException($"the scheduler stalled in {_running?.Name} at step {Steps}");
                }
            }
        }

        return finished();
    }

    public void Dispose()
    {
        _stopping = true;
        foreach (var actor in _actors)
        {
            actor.Stop();
        }

        _over.Dispose();
    }

    /// <summary>
    /// The step the baton holder just finished is over: count it, then draw who runs next (null: the run is over).
    /// </summary>
    private Actor? EndStep()
    {
        long steps = Interlocked.Increment(ref _steps);
        AfterStep?.Invoke(steps);
        return DrawNext();
    }

    /// <summary>One draw of the schedule; the caller holds the baton, so draws happen in one sequence.</summary>
    private Actor? DrawNext()
    {
        if (Steps >= _maxSteps || _finished())
        {
            return null;
        }

        if (_random.NextDouble() < _changeRate)
        {
            // A priority change point (as in PCT): one actor speeds up or slows down, so lags build up and unwind.
            _actors[_random.Next(_actors.Count)].Weight = DrawWeight();
        }

        var live = _actors.Where(a => !a.Done && a.CanRun).ToList();
        if (live.Count > 1 && _lastParked is { ExcludeNext: true } last)
        {
            live.Remove(last);
        }

        if (live.Count == 0)
        {
            return null; // everyone waits on everyone: a stall, reported as not finished
        }

        double pick = _random.NextDouble() * live.Sum(a => a.Weight);
        var next = live[^1];
        foreach (var actor in live)
        {
            pick -= actor.Weight;
            if (pick <= 0)
            {
                next = actor;
                break;
            }
        }

        _lastParked = next;
        next.ExcludeNext = false;
        return next;
    }

    /// <summary>Gives the baton to <paramref name="next"/>, or ends the run when there is none.</summary>
    private void Hand(Actor? next)
    {
        if (next is null)
        {
            _running = null;
            _over.Set();
            return;
        }

        _running = next;
        next.Go.Release();
    }

    // Skewed: a cubed uniform puts some actors at a crawl (a starved hint thread, a lagging channel).
    private double DrawWeight() => 0.02 + (2 * Math.Pow(_random.NextDouble(), 3));

    private sealed class Actor(SeededScheduler owner, string name, Func<bool> step, double weight)
    {
        private Thread? _thread;
        private double _weight = weight;

        public string Name { get; } = name;

        public double Weight
        {
            get => _weight;
            set => _weight = Steady ? _weight : value;
        }

        public bool Steady { get; init; }

        /// <summary>Parked at a phase boundary: the next draw excludes it.</summary>
        public bool ExcludeNext { get; set; }

        public SemaphoreSlim Go { get; } = new(0);

        public volatile bool Done;

        public Func<bool>? Ready { get; init; }

        public Func<bool>? Waiting { get; set; }

        /// <summary>Evaluated by the baton holder at a draw, while every other actor is parked.</summary>
        public bool CanRun => Waiting?.Invoke() ?? Ready?.Invoke() ?? true;

        public Exception? Error { get; private set; }

        public void Start()
        {
            _thread = new Thread(Body) { IsBackground = true, Name = Name };
            _thread.Start();
        }

        /// <summary>
        /// Ends this actor's step: draws the next actor and hands over, unless the draw picks this one again.
        /// </summary>
        public void Park(bool excludeNext)
        {
            ExcludeNext = excludeNext;
            if (owner._stopping)
            {
                throw new SchedulerStoppedException(); // unwinding: never wait again
            }

            var next = owner.EndStep();
            if (ReferenceEquals(next, this))
            {
                return;
            }

            owner.Hand(next);
            Go.Wait();
            if (owner._stopping)
            {
                throw new SchedulerStoppedException();
            }
        }

        public void Stop()
        {
            if (_thread is null)
            {
                return;
            }

            Go.Release();
            _thread.Join(TimeSpan.FromSeconds(10));
        }

        private void Body()
        {
            Go.Wait();
            t_current = this;
            try
            {
                while (!owner._stopping && step())
                {
                    Park(excludeNext: false);
                }
            }
            catch (SchedulerStoppedException)
            {
            }
            catch (AggregateException ex) when (ex.InnerExceptions.All(e => e is SchedulerStoppedException))
            {
            }
            catch (Exception ex)
            {
                Error = ex;
            }
            finally
            {
                Done = true;
                t_current = null;
                if (!owner._stopping)
                {
                    owner.Hand(owner.EndStep()); // this actor's last step is over; it never runs again
                }
            }
        }
    }
}

/// <summary>Unwinds an actor parked at a scheduling point when the run is over.</summary>
internal sealed class SchedulerStoppedException : Exception
{
    public SchedulerStoppedException()
        : base("the scheduler stopped")
    {
    }

    public SchedulerStoppedException(string message)
        : base(message)
    {
    }

    public SchedulerStoppedException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
