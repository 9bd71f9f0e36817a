using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Migration.Protocol;
using Migration.Target.Diagnostics;
using Migration.Target.Tests.Receiving;

namespace Migration.Target.Tests.Diagnostics;

/// <summary>The target's instruments follow its state machine: active while receiving, every end by outcome.</summary>
public sealed class TargetMetricsTests
{
    [Fact]
    public void MigrationsAreCountedByOutcome_AndActiveReturnsToZero()
    {
        using var meter = new Meter($"test-{Guid.NewGuid():n}");
        var seen = new ConcurrentQueue<(string Name, double Value, string Tags)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (ReferenceEquals(instrument.Meter, meter))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((i, v, t, _) =>
            seen.Enqueue((i.Name, v, string.Join(",", t.ToArray().Select(x => $"{x.Key}={x.Value}")))));
        listener.SetMeasurementEventCallback<double>((i, v, _, _) => seen.Enqueue((i.Name, v, "")));
        listener.Start();

        using var target = Targets.New(new ScriptedSwitchover(), metrics: new TargetMetrics(meter));
        var owner = target.BeginAs("a");
        target.Cancel(new CancelRequest { MigrationId = "a", Reason = "user" }, owner);
        owner = target.BeginAs("b");
        target.Complete(new CompleteRequest { MigrationId = "b" }, owner); // the scripted switchover refuses it

        Assert.Equal([1.0, -1.0, 1.0, -1.0],
            seen.Where(m => m.Name == "migration.target.active").Select(m => m.Value));
        Assert.Equal(["outcome=discarded", "outcome=discarded"],
            seen.Where(m => m.Name == "migration.target.migrations").Select(m => m.Tags));
        Assert.Single(seen, m => m.Name == "migration.target.switchover");
    }
}
