namespace Migration.Shared.Guest;

/// <summary>
/// How much of each vCPU's time the host takes away while a migration needs the guest to dirty less: a share of every
/// timeslice spent asleep (QEMU's <c>cpu-throttle</c>), set for every vCPU at once by auto-converge, or chosen by each
/// vCPU for itself to hold its own dirty rate under a ceiling (QEMU's <c>dirty-limit</c>), so a vCPU that writes little
/// is not slowed.
/// </summary>
/// <remarks>
/// <para>
/// The sleep falls only between two guest steps, never inside one (rule C1): a step's stores and their dirty marks
/// are done before the vCPU sleeps, and a pause that comes while it sleeps parks it at once, so neither the final
/// sync nor the downtime waits on a throttle.
/// </para>
/// <para>
/// Each vCPU is also its own CPU clock (<see cref="Vcpu"/> is a <see cref="TimeProvider"/>): wall time less the time it
/// was made to sleep. Workloads pace their work on it, as a CPU-bound program does as much as the CPU it gets, so a
/// 40% throttle costs a paced workload 40% of its work, as it would cost a real one.
/// </para>
/// </remarks>
public sealed class VcpuThrottle
{
    /// <summary>QEMU's throttle timeslice: the vCPU runs this long, then sleeps its share's worth.</summary>
    public static readonly TimeSpan Timeslice = TimeSpan.FromMilliseconds(10);

    /// <summary>The most a throttle may take (QEMU's <c>max-cpu-throttle</c> ceiling).</summary>
    public const double MaxShare = 0.99;

    /// <summary>How often a vCPU under a dirty-rate ceiling measures its rate and sets its share anew.</summary>
    public static readonly TimeSpan CeilingWindow = TimeSpan.FromMilliseconds(100);

    [ThreadStatic]
    private static Vcpu? t_current;

    private readonly Vcpu[] _vcpus;

    public VcpuThrottle(int vcpus, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vcpus);
        ArgumentNullException.ThrowIfNull(time);
        _vcpus = [.. Enumerable.Range(0, vcpus).Select(i => new Vcpu(i, time))];
    }

    public int Count => _vcpus.Length;

    public Vcpu this[int index] => _vcpus[index];

    public IReadOnlyList<Vcpu> Vcpus => _vcpus;

    /// <summary>Throttles every vCPU by <paramref name="share"/> (0 = not at all) and lifts any ceiling.</summary>
    public void SetShare(double share)
    {
        CheckShare(share);
        foreach (var vcpu in _vcpus)
        {
            vcpu.Ceiling = null;
            vcpu.Share = share;
        }
    }

    /// <summary>
    /// Holds each vCPU's dirty rate at or under <paramref name="pagesPerSecond"/> (null lifts the ceiling and the
    /// throttle it set). A vCPU under the ceiling keeps its whole timeslice.
    /// </summary>
    public void SetCeiling(double? pagesPerSecond)
    {
        if (pagesPerSecond is { } rate && (!double.IsFinite(rate) || rate <= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(pagesPerSecond), rate, "A dirty-rate ceiling is positive.");
        }

        foreach (var vcpu in _vcpus)
        {
            vcpu.Ceiling = pagesPerSecond;
            if (pagesPerSecond is null)
            {
                vcpu.Share = 0;
            }
        }
    }

    /// <summary>No throttle and no ceiling: how a guest runs outside a migration.</summary>
    public void Reset() => SetShare(0);

    /// <summary>The largest share any vCPU is throttled by now.</summary>
    public double MaxCurrentShare => _vcpus.Max(v => v.Share);

    /// <summary>Every vCPU's time taken away so far.</summary>
    public TimeSpan Stolen => TimeSpan.FromTicks(_vcpus.Sum(v => v.Stolen.Ticks));

    /// <summary>Pages first logged by every vCPU's stores (each page once per sync that re-armed it).</summary>
    public long PagesDirtied => _vcpus.Sum(v => v.PagesDirtied);

    /// <summary>
    /// Called by the write path when a store logged a page that was armed: counts it to the vCPU this thread runs.
    /// A store made by any other thread (a device, a driver) counts to none.
    /// </summary>
    internal static void CountDirtied()
    {
        if (t_current is { } vcpu)
        {
            vcpu.CountDirtied();
        }
    }

    internal static void CheckShare(double share)
    {
        if (!double.IsFinite(share) || share < 0 || share > MaxShare)
        {
            throw new ArgumentOutOfRangeException(nameof(share), share,
                $"A throttle takes 0 to {MaxShare:P0} of a vCPU's time.");
        }
    }

    /// <summary>One vCPU's throttle, dirty meter and CPU clock. Its thread alone calls the step methods.</summary>
    public sealed class Vcpu : TimeProvider
    {
        private readonly TimeProvider _wall;
        private double _share;
        private double _ceiling = double.NaN; // NaN: none
        private long _stolenTicks; // in _wall's timestamp units
        private long _dirtied;
        private long _sliceStart;
        private long _windowStart;
        private long _windowDirtied;

        internal Vcpu(int index, TimeProvider wall)
        {
            Index = index;
            _wall = wall;
            _sliceStart = wall.GetTimestamp();
            _windowStart = _sliceStart;
        }

        public int Index { get; }

        /// <summary>The share of each timeslice this vCPU sleeps (0 to <see cref="MaxShare"/>).</summary>
        public double Share
        {
            get => Volatile.Read(ref _share);
            internal set
            {
                CheckShare(value);
                Volatile.Write(ref _share, value);
            }
        }

        /// <summary>This vCPU's dirty-rate ceiling in pages per second; null = none.</summary>
        public double? Ceiling
        {
            get => Volatile.Read(ref _ceiling) is var c && double.IsNaN(c) ? null : c;
            internal set => Volatile.Write(ref _ceiling, value ?? double.NaN);
        }

        /// <summary>Pages this vCPU's stores logged (each page once per sync that re-armed it).</summary>
        public long PagesDirtied => Interlocked.Read(ref _dirtied);

        /// <summary>The time this vCPU was made to sleep.</summary>
        public TimeSpan Stolen => TimeSpan.FromSeconds(
            (double)Interlocked.Read(ref _stolenTicks) / _wall.TimestampFrequency);

        public override long TimestampFrequency => _wall.TimestampFrequency;

        /// <summary>The vCPU's CPU clock: wall time less the time it slept for a throttle.</summary>
        public override long GetTimestamp() => _wall.GetTimestamp() - Interlocked.Read(ref _stolenTicks);

        /// <summary>Binds the calling thread to this vCPU, so the write path counts its stores here.</summary>
        public void Enter() => t_current = this;

        /// <summary>Unbinds the calling thread.</summary>
        public static void Leave() => t_current = null;

        /// <summary>
        /// Called by the thread host after each step: how long to sleep now (zero while the timeslice lasts or when
        /// not throttled). Under a ceiling, first measures this vCPU's dirty rate and sets its share from it.
        /// </summary>
        public TimeSpan AfterStep()
        {
            long now = _wall.GetTimestamp();
            if (Ceiling is { } ceiling)
            {
                FollowCeiling(ceiling, now);
            }

            double share = Share;
            TimeSpan ran = _wall.GetElapsedTime(_sliceStart, now);
            if (share <= 0)
            {
                _sliceStart = now;
                return TimeSpan.Zero;
            }

            if (ran < Timeslice)
            {
                return TimeSpan.Zero;
            }

            // Sleep so that over the slice and its sleep the vCPU ran (1 - share) of the time.
            _sliceStart = now;
            return ran * (share / (1 - share));
        }

        /// <summary>The host slept this vCPU for <paramref name="slept"/>: its CPU clock does not see that time.</summary>
        public void Slept(TimeSpan slept)
        {
            if (slept > TimeSpan.Zero)
            {
                Interlocked.Add(ref _stolenTicks, (long)(slept.TotalSeconds * _wall.TimestampFrequency));
            }

            _sliceStart = _wall.GetTimestamp();
        }

        internal void CountDirtied()
        {
            Interlocked.Increment(ref _dirtied);
        }

        /// <summary>
        /// Every <see cref="CeilingWindow"/>: the rate this vCPU dirtied at, what it would dirty unthrottled (the rate
        /// over the share of time it ran), and the share that brings that to the ceiling.
        /// </summary>
        private void FollowCeiling(double ceiling, long now)
        {
            TimeSpan window = _wall.GetElapsedTime(_windowStart, now);
            if (window < CeilingWindow)
            {
                return;
            }

            long dirtied = PagesDirtied;
            double rate = (dirtied - _windowDirtied) / window.TotalSeconds;
            _windowStart = now;
            _windowDirtied = dirtied;
            Share = CeilingShare(rate, Share, ceiling);
        }

        /// <summary>
        /// The share that holds a vCPU measured at <paramref name="rate"/> pages/s while throttled by
        /// <paramref name="share"/> to <paramref name="ceiling"/>: its unthrottled rate is rate / (1 - share), and a
        /// share s leaves it (1 - s) of that. Halfway from the old share, so one noisy window does not swing it.
        /// </summary>
        internal static double CeilingShare(double rate, double share, double ceiling)
        {
            double unthrottled = rate / (1 - share);
            double wanted = unthrottled <= ceiling ? 0 : 1 - (ceiling / unthrottled);
            double next = (share + wanted) / 2;
            return next < 0.01 ? 0 : Math.Min(next, MaxShare);
        }
    }
}
