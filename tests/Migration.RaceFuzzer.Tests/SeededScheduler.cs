namespace Migration.RaceFuzzer.Tests;

/// <summary>
/// Runs actors (vCPUs, the balloon driver, the hint thread, the migration thread, channel deliveries) one at a time,
/// in an order drawn from a seed. Each actor is a real thread, but only the one holding the baton runs: it runs until
/// its next scheduling point (<see cref="Yield"/>, called by the components through their race hooks), then hands the
/// baton back and the scheduler draws the next actor. The same seed gives the same interleaving, so any failure replays.
/// </summary>
/// <remarks>
/// Actors get seed-drawn weights, so some seeds starve an actor for long stretches (the interleavings where races live)
/// rather than every seed looking like a fair round-robin.
/// </remarks>
internal sealed class SeededScheduler : IDisposable
{
    [ThreadStatic]
    private static Actor? t_current;

    private readonly Random _random;
    private readonly List<Actor> _actors = [];
    private readonly SemaphoreSlim _baton = new(0);
    private volatile bool _stopping;

    private readonly Random _yieldRandom;
    private readonly double _yieldProbability;

    public SeededScheduler(int seed)
    {
        _random = new Random(seed);
        _yieldRandom = new Random(~seed);
        // Not every scheduling point switches actors: fewer hand-offs per seed, and runs of several steps by one actor.
        _yieldProbability = 0.15 + (0.85 * _random.NextDouble());
        _changeRate = 1.0 / (100 + _random.Next(2000));
    }

    private readonly double _changeRate;
    private Actor? _lastParked;

    /// <summary>Scheduling points taken so far.</summary>
    public long Steps { get; private set; }

    /// <summary>Called after every step with the step number (the harness advances its clock and watches syncs).</summary>
    public Action<long>? AfterStep { get; set; }

    /// <summary>
    /// Adds an actor whose <paramref name="step"/> returns false when it has nothing more to do, ever. It is only
    /// scheduled while <paramref name="ready"/> holds (an idle channel, an empty hint queue), and it runs at a seed-drawn
    /// speed unless <paramref name="steady"/>.
    /// </summary>
    public void Add(string name, Func<bool> step, Func<bool>? ready = null, bool steady = false)
    {
        _actors.Add(new Actor(this, name, step, steady ? 1 : DrawWeight()) { Ready = ready, Steady = steady });
    }

    // Skewed: a cubed uniform puts some actors at a crawl (a starved hint thread, a lagging channel).
    private double DrawWeight() => 0.02 + (2 * Math.Pow(_random.NextDouble(), 3));

    /// <summary>
    /// Parks the running actor until <paramref name="ready"/> holds; other actors run meanwhile. Conditions (and the
    /// actors' ready predicates) are evaluated on the scheduler's thread while actors may hold locks: they must not lock.
    /// </summary>
    public void WaitUntil(Func<bool> ready)
    {
        if (t_current is not { } actor)
        {
            SpinWait.SpinUntil(ready);
            return;
        }

        while (!ready())
        {
            actor.Waiting = ready;
            actor.Park();
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

    /// <summary>Runs until <paramref name="finished"/> holds or <paramref name="maxSteps"/> is reached. Returns whether it finished.</summary>
    public bool Run(long maxSteps, Func<bool> finished)
    {
        foreach (var actor in _actors)
        {
            actor.Start();
        }

        while (Steps < maxSteps && !finished())
        {
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
                break; // everyone waits on everyone: a stall, reported as not finished
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
            next.Go.Release();
            if (!_baton.Wait(TimeSpan.FromSeconds(60)))
            {
                // An actor blocked outside a scheduling point (a plain lock held by a parked actor): a harness bug.
                throw new TimeoutException($"the scheduler stalled in {next.Name} at step {Steps}");
            }
            Steps++;
            AfterStep?.Invoke(Steps);
        }

        return finished();
    }

    /// <summary>Errors actors died with (a bug in a component shows up here, not as a hang).</summary>
    public IEnumerable<string> Errors => _actors.Where(a => a.Error is not null).Select(a => $"{a.Name}: {a.Error}");

    public void Dispose()
    {
        _stopping = true;
        foreach (var actor in _actors)
        {
            actor.Stop();
        }

        _baton.Dispose();
    }

    private sealed class Actor(SeededScheduler owner, string name, Func<bool> step, double weight)
    {
        private Thread? _thread;

        public string Name { get; } = name;

        private double _weight = weight;

        public double Weight
        {
            get => _weight;
            set => _weight = Steady ? _weight : value;
        }

        public bool Steady { get; init; }

        /// <summary>Parked at a phase boundary: the scheduler runs someone else next.</summary>
        public bool ExcludeNext { get; set; }

        public SemaphoreSlim Go { get; } = new(0);

        public volatile bool Done;

        public Func<bool>? Ready { get; init; }

        public Func<bool>? Waiting { get; set; }

        /// <summary>Evaluated by the scheduler while every actor is parked.</summary>
        public bool CanRun => Waiting?.Invoke() ?? Ready?.Invoke() ?? true;

        public Exception? Error { get; private set; }

        public void Start()
        {
            _thread = new Thread(Body) { IsBackground = true, Name = Name };
            _thread.Start();
        }

        public void Park(bool excludeNext = false)
        {
            ExcludeNext = excludeNext;
            if (owner._stopping)
            {
                throw new SchedulerStoppedException(); // unwinding: never wait again
            }

            owner._baton.Release();
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
                    Park();
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
                    owner._baton.Release();
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
