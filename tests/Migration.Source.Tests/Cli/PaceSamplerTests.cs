using Migration.Source.Cli;

namespace Migration.Source.Tests.Cli;

public sealed class PaceSamplerTests
{
    [Fact]
    public void ADisturbedInterval_IsNotThePace()
    {
        // 7,600 ops/s, but one 50 ms interval ran 4,000 ops more: one interval over the whole 300 ms would say
        // 20,900 ops/s.
        var pace = new PaceSampler(0, TimeSpan.Zero);
        long ops = 0;
        for (int i = 1; i <= 6; i++)
        {
            ops += 380 + (i == 1 ? 4000 : 0);
            pace.Sample(ops, TimeSpan.FromMilliseconds(50 * i));
        }

        Assert.Equal(TimeSpan.FromMilliseconds(300), pace.Elapsed);
        Assert.Equal(7600, pace.MedianPerSecond!.Value, 6);
    }

    [Fact]
    public void AGuestThatCountsNothing_HasNoPace()
    {
        var pace = new PaceSampler(0, TimeSpan.Zero);
        Assert.Null(pace.MedianPerSecond);
        pace.Sample(0, TimeSpan.FromMilliseconds(50));
        Assert.Null(pace.MedianPerSecond);
    }
}
