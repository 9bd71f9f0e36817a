using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;

namespace Migration.Shared.Tests.Guest;

public class GuestThreadPoolTests
{
    /// <summary>
    /// A thread that says it has nothing to do for an hour sleeps instead of polling, yet pausing and stopping the
    /// VM do not wait for it: they wake it. Without the wake-up, Pause would hang until the test's timeout.
    /// </summary>
    [Fact]
    public async Task AnIdleThreadSleepsAsLongAsItAsks_ButPauseAndShutdownWakeIt()
    {
        await Task.Run(() =>
        {
            long steps = 0;
            var pool = new GuestThreadPool();
            pool.Start([new GuestThread("idle", () =>
            {
                Interlocked.Increment(ref steps);
                return StepResult.Idle;
            }, () => TimeSpan.FromHours(1))]);
            try
            {
                SpinWait.SpinUntil(() => Interlocked.Read(ref steps) > 0, TimeSpan.FromSeconds(10));
                Thread.Sleep(200);
                // A 1 ms poll would have stepped about 200 times by now.
                Assert.InRange(Interlocked.Read(ref steps), 1, 2);

                pool.Pause();
                long paused = Interlocked.Read(ref steps);
                Thread.Sleep(50);
                Assert.Equal(paused, Interlocked.Read(ref steps));

                pool.Resume();
                SpinWait.SpinUntil(() => Interlocked.Read(ref steps) > paused, TimeSpan.FromSeconds(10));
                Assert.True(Interlocked.Read(ref steps) > paused, "the thread did not step again after Resume");
            }
            finally
            {
                pool.Shutdown();
            }

            Assert.Empty(pool.Crashes);
        }).WaitAsync(TimeSpan.FromSeconds(30));
    }

    /// <summary>A device's wake-up ends the sleep at once: without it the thread would sleep the hour it asked.</summary>
    [Fact]
    public async Task Wake_EndsAnIdleSleep()
    {
        await Task.Run(() =>
        {
            long steps = 0;
            var pool = new GuestThreadPool();
            pool.Start([new GuestThread("idle", () =>
            {
                Interlocked.Increment(ref steps);
                return StepResult.Idle;
            }, () => TimeSpan.FromHours(1))]);
            try
            {
                SpinWait.SpinUntil(() => Interlocked.Read(ref steps) > 0, TimeSpan.FromSeconds(10));
                for (int i = 0; i < 3; i++)
                {
                    long before = Interlocked.Read(ref steps);
                    pool.Wake();
                    SpinWait.SpinUntil(() => Interlocked.Read(ref steps) > before, TimeSpan.FromSeconds(10));
                    Assert.True(Interlocked.Read(ref steps) > before, $"wake-up {i} did not end the sleep");
                }
            }
            finally
            {
                pool.Shutdown();
            }
        }).WaitAsync(TimeSpan.FromSeconds(60));
    }

    [Fact]
    public async Task AThreadWithoutAnIdleTime_PollsEveryMillisecond()
    {
        await Task.Run(() =>
        {
            long steps = 0;
            var pool = new GuestThreadPool();
            pool.Start([new GuestThread("poller", () =>
            {
                Interlocked.Increment(ref steps);
                return StepResult.Idle;
            })]);
            try
            {
                SpinWait.SpinUntil(() => Interlocked.Read(ref steps) >= 10, TimeSpan.FromSeconds(10));
                Assert.True(Interlocked.Read(ref steps) >= 10);
            }
            finally
            {
                pool.Shutdown();
            }
        }).WaitAsync(TimeSpan.FromSeconds(30));
    }
}
