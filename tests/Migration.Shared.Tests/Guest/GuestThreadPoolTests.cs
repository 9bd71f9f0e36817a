using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;

namespace Migration.Shared.Tests.Guest;

public class GuestThreadPoolTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    /// <summary>
    /// A thread that says it has nothing to do for an hour sleeps instead of polling, yet pausing and stopping the
    /// VM do not wait for it: they wake it. Without the wake-up, Pause would hang until the test's timeout.
    /// </summary>
    [Fact]
    public Task AnIdleThreadSleepsAsLongAsItAsks_ButPauseAndShutdownWakeIt() => WithIdleThread(TimeSpan.FromHours(1),
        (pool, steps) =>
        {
            WaitForStepsAbove(steps, 0);
            Thread.Sleep(200);
            Assert.InRange(steps(), 1, 2); // a 1 ms poll would have stepped about 200 times by now

            pool.Pause();
            long paused = steps();
            Thread.Sleep(50);
            Assert.Equal(paused, steps());

            pool.Resume();
            WaitForStepsAbove(steps, paused);
        });

    /// <summary>A device's wake-up ends the sleep at once: without it the thread would sleep the hour it asked.</summary>
    [Fact]
    public Task Wake_EndsAnIdleSleep() => WithIdleThread(TimeSpan.FromHours(1), (pool, steps) =>
    {
        WaitForStepsAbove(steps, 0);
        for (int i = 0; i < 3; i++)
        {
            long before = steps();
            pool.Wake();
            WaitForStepsAbove(steps, before);
        }
    });

    [Fact]
    public Task AThreadWithoutAnIdleTime_PollsEveryMillisecond() =>
        WithIdleThread(null, (_, steps) => WaitForStepsAbove(steps, 10));

    /// <summary>
    /// Runs <paramref name="test"/> against a pool with one thread whose every step is idle, given the pool and the
    /// thread's step count; shuts the pool down and checks nothing crashed.
    /// </summary>
    private static Task WithIdleThread(TimeSpan? idleFor, Action<GuestThreadPool, Func<long>> test) =>
        Task.Run(() =>
        {
            long steps = 0;
            var pool = new GuestThreadPool();
            StepResult Step()
            {
                Interlocked.Increment(ref steps);
                return StepResult.Idle;
            }

            pool.Start([new GuestThread("idle", Step, idleFor is { } t ? () => t : null)]);
            try
            {
                test(pool, () => Interlocked.Read(ref steps));
            }
            finally
            {
                pool.Shutdown();
            }

            Assert.Empty(pool.Crashes);
        }).WaitAsync(TimeSpan.FromSeconds(60));

    private static void WaitForStepsAbove(Func<long> steps, long count) =>
        Assert.True(SpinWait.SpinUntil(() => steps() > count, Patience), $"still {steps()} steps, not above {count}");
}
