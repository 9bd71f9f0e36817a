using Microsoft.Extensions.Time.Testing;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;

namespace Migration.Shared.Tests.Guest;

/// <summary>
/// The guest's half of convergence: how long a throttled vCPU sleeps, what its CPU clock sees, how a ceiling sets a
/// vCPU's share, and that a pause never waits for a throttle's sleep.
/// </summary>
public sealed class VcpuThrottleTests
{
    [Fact]
    public void AThrottledVcpu_SleepsItsShareAfterEachTimeslice_AndItsCpuClockDoesNotSeeTheSleep()
    {
        var time = new FakeTimeProvider();
        var throttle = new VcpuThrottle(2, time);
        var vcpu = throttle[0];
        throttle.SetShare(0.6);

        time.Advance(TimeSpan.FromMilliseconds(4));
        Assert.Equal(TimeSpan.Zero, vcpu.AfterStep()); // within the slice: runs on
        time.Advance(TimeSpan.FromMilliseconds(6));
        var sleep = vcpu.AfterStep();
        Assert.Equal(15, sleep.TotalMilliseconds, 6); // 10 ms ran, so 15 ms asleep: it ran 40% of the time

        long cpuBefore = vcpu.GetTimestamp();
        time.Advance(sleep);
        vcpu.Slept(sleep);
        Assert.Equal(cpuBefore, vcpu.GetTimestamp()); // the CPU clock stood still while it slept
        Assert.Equal(sleep, vcpu.Stolen);
        Assert.Equal(TimeSpan.Zero, throttle[1].Stolen);

        throttle.Reset();
        time.Advance(TimeSpan.FromMilliseconds(50));
        Assert.Equal(TimeSpan.Zero, vcpu.AfterStep());
    }

    [Fact]
    public void APacedWorkload_LosesTheThrottledShareOfItsWork()
    {
        var time = new FakeTimeProvider();
        var throttle = new VcpuThrottle(1, time);
        var vcpu = throttle[0];
        var pacer = new RatePacer(vcpu, perSecond: 1000);
        throttle.SetShare(0.5);
        int done = 0;
        for (int ms = 0; ms < 2000; ms++)
        {
            time.Advance(TimeSpan.FromMilliseconds(1));
            while (pacer.TryTake())
            {
                done++;
            }

            if (vcpu.AfterStep() is var sleep && sleep > TimeSpan.Zero)
            {
                // the sleep passes on the wall clock in 1 ms steps, none of it the vCPU's
                for (double slept = 0; slept < sleep.TotalMilliseconds; slept++, ms++)
                {
                    time.Advance(TimeSpan.FromMilliseconds(1));
                }

                vcpu.Slept(sleep);
            }
        }

        Assert.InRange(done, 950, 1050); // 2 s of wall time, half of it the vCPU's, at 1000 a second
    }

    [Theory]
    [InlineData(1000, 0, 250, 0.375)] // unthrottled 1000/s, ceiling 250/s: 75% wanted, half of the way there
    [InlineData(250, 0.75, 250, 0.75)] // held at the ceiling: stays
    [InlineData(100, 0, 250, 0)] // under the ceiling: not slowed
    [InlineData(50, 0.75, 250, 0.375)] // the vCPU went quiet: the throttle comes off
    public void ACeiling_SetsTheShareThatBringsTheVcpuToIt(double rate, double share, double ceiling, double next) =>
        Assert.Equal(next, VcpuThrottle.Vcpu.CeilingShare(rate, share, ceiling), 6);

    [Fact]
    public void ACeiling_SettlesAVcpuThatWritesTooFast_AndLeavesAQuietOneAlone()
    {
        double fast = 0;
        double quiet = 0;
        for (int window = 0; window < 12; window++)
        {
            // each measures (1 - share) of its unthrottled rate: 4000 and 100 pages/s, ceiling 1000
            fast = VcpuThrottle.Vcpu.CeilingShare(4000 * (1 - fast), fast, 1000);
            quiet = VcpuThrottle.Vcpu.CeilingShare(100 * (1 - quiet), quiet, 1000);
        }

        Assert.Equal(0.75, fast, 2);
        Assert.Equal(0, quiet);
    }

    [Fact]
    public void AVcpuUnderACeiling_MeasuresItsOwnStores()
    {
        var time = new FakeTimeProvider();
        var throttle = new VcpuThrottle(2, time);
        throttle.SetCeiling(1000);
        var vcpu = throttle[1];
        var thread = new Thread(() =>
        {
            vcpu.Enter();
            for (int i = 0; i < 500; i++)
            {
                VcpuThrottle.CountDirtied(); // as the write path does for each page a store logged
            }

            VcpuThrottle.Vcpu.Leave();
        });
        thread.Start();
        thread.Join();
        VcpuThrottle.CountDirtied(); // this thread is no vCPU: counted to none

        Assert.Equal((0L, 500L), (throttle[0].PagesDirtied, vcpu.PagesDirtied));
        time.Advance(VcpuThrottle.CeilingWindow);
        vcpu.AfterStep(); // 500 pages in 100 ms: 5000/s against a ceiling of 1000
        Assert.Equal(0.4, vcpu.Share, 6);
        Assert.Equal(0, throttle[0].Share);
    }

    [Fact]
    public void BadSharesAndCeilings_AreRefused()
    {
        var throttle = new VcpuThrottle(1, TimeProvider.System);
        Assert.Throws<ArgumentOutOfRangeException>(() => throttle.SetShare(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => throttle.SetShare(-0.1));
        Assert.Throws<ArgumentOutOfRangeException>(() => throttle.SetShare(double.NaN));
        Assert.Throws<ArgumentOutOfRangeException>(() => throttle.SetCeiling(0));
    }

    /// <summary>
    /// A vCPU throttled by 99% sleeps about a second after each slice; a pause that comes meanwhile must park it at
    /// once, or the downtime would grow by the throttle. Without the pause check in the throttle's sleep the vCPU
    /// would sleep its whole second.
    /// </summary>
    [Fact(Timeout = 30_000)]
    public async Task APause_EndsAThrottlesSleep()
    {
        var throttle = new VcpuThrottle(1, TimeProvider.System);
        throttle.SetShare(0.99);
        var pool = new GuestThreadPool();
        using var firstStep = new ManualResetEventSlim();
        int steps = 0;
        pool.Start([new GuestThread("vcpu0", () =>
        {
            Thread.Sleep(12); // a slice's worth: the throttle sleeps ~1.2 s after this step
            Interlocked.Increment(ref steps);
            firstStep.Set();
            return StepResult.Progress;
        }, Vcpu: throttle[0])]);
        try
        {
            firstStep.Wait();
            await Task.Delay(50); // into the sleep
            pool.Pause();
            Assert.Equal(1, Volatile.Read(ref steps));
            Assert.InRange(throttle[0].Stolen.TotalMilliseconds, 1, 900); // cut short, not the 1.2 s asked
        }
        finally
        {
            pool.Shutdown();
        }
    }
}
