using ArchUnitNET.Domain;
using ArchUnitNET.Loader;
using Migration.Target.Receiving;

namespace Migration.Target.Tests;

/// <summary>
/// The target carries the devices' sections to the machine without reading them: no type of the target's receiving
/// side or its services names a device. A field that travels with a device is then an edit in the device alone.
/// </summary>
public sealed class ArchitectureTests
{
    private const string Devices = "Migration.Shared.Balloon";

    private static readonly Architecture Target =
        new ArchLoader().LoadAssemblies(typeof(Switchover).Assembly).Build();

    [Theory]
    [InlineData("Migration.Target.Receiving")]
    [InlineData("Migration.Target.Services")]
    public void TheTarget_NamesNoDevice(string folder)
    {
        string[] edges = [.. Target.Types
            .Where(t => t.Namespace?.FullName == folder)
            .SelectMany(t => t.Dependencies.Select(d => (From: t, To: d.Target)))
            .Where(e => e.To.Namespace?.FullName is { } ns && (ns == Devices
                || ns.StartsWith(Devices + ".", StringComparison.Ordinal)))
            .Select(e => $"{e.From.FullName} -> {e.To.FullName}")
            .Distinct()];
        Assert.True(edges.Length == 0, $"{folder} reads a device's state:\n  " + string.Join("\n  ", edges));
    }
}
