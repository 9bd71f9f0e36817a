using ArchUnitNET.Domain;
using ArchUnitNET.Loader;
using Migration.Shared.Machine;

namespace Migration.Shared.Tests;

/// <summary>
/// The floors of the engine (docs/design.md, "Layers"), read from the built assembly: each folder may use the ones
/// below it and none above. A forbidden edge fails here naming both types, so a layer cannot grow back into a knot one
/// convenient reference at a time.
/// </summary>
/// <remarks>
/// From the bottom: the common ground (<c>Concurrency</c>, <c>Internal</c>, <c>Protocol</c>'s version and status
/// types), the dirty log, the guest (RAM, write path, kernel, workloads), the devices, the machine that wires them, the
/// state checks and the report, the transport, the engine, and the hosts (management API, hosting, CLI).
/// </remarks>
public sealed class ArchitectureTests
{
    private const string Root = "Migration.Shared";

    private static readonly Architecture Shared =
        new ArchLoader().LoadAssemblies(typeof(VirtualMachine).Assembly).Build();

    /// <summary>Everything above the guest, which the guest must never reach.</summary>
    private static readonly string[] AboveTheGuest =
        ["Devices", "Balloon", "Machine", "Verification", "Reporting", "Diagnostics", "Transport", "Precopy", "Hosting",
         "Cli", "Migration.Management"];

    public static TheoryData<string, string[]> Floors => new()
    {
        { "DirtyTracking", [.. AboveTheGuest, "Guest"] },
        { "Guest", AboveTheGuest },
        { "Devices", ["Balloon", "Machine", "Verification", "Reporting", "Transport", "Precopy", "Hosting", "Cli",
            "Migration.Management"] },
        { "Balloon", ["Machine", "Verification", "Reporting", "Transport", "Precopy", "Hosting", "Cli",
            "Migration.Management"] },
        { "Machine", ["Verification", "Reporting", "Transport", "Precopy", "Hosting", "Cli", "Migration.Management"] },
        { "Verification", ["Balloon", "Machine", "Reporting", "Transport", "Precopy", "Hosting",
            "Migration.Management"] },
        // The live meters sit on the common ground: devices and the transport count into them.
        { "Diagnostics", ["DirtyTracking", "Guest", "Devices", "Balloon", "Machine", "Verification", "Reporting",
            "Transport", "Precopy", "Hosting", "Cli", "Migration.Management"] },
        { "Reporting", ["Transport", "Precopy", "Hosting", "Cli", "Migration.Management"] },
        { "Transport", ["Balloon", "Machine", "Precopy", "Migration.Management"] },
        // The engine names no device: it iterates the machine's participants and carries their sections.
        { "Precopy", ["Balloon", "Hosting", "Cli", "Migration.Management"] },
    };

    [Theory]
    [MemberData(nameof(Floors))]
    public void AFloor_UsesNothingAboveIt(string floor, string[] above)
    {
        string[] edges = [.. Edges(Namespace(floor), above.Select(Namespace))];
        Assert.True(edges.Length == 0,
            $"{floor} reaches above its floor ({edges.Length} edges):\n  " + string.Join("\n  ", edges.Take(40)));
    }

    [Fact]
    public void TheEngine_DoesNotReferenceGrpc()
    {
        string[] edges = [.. Edges(Namespace("Precopy"), ["Grpc"])];
        Assert.True(edges.Length == 0, "the engine uses gRPC; the transport is its edge:\n  " +
            string.Join("\n  ", edges.Take(40)));
    }

    /// <summary>The rule itself fails on a known edge, so an empty answer above means something.</summary>
    [Fact]
    public void TheCheck_SeesAKnownEdge() =>
        Assert.Contains(Edges(Namespace("Machine"), [Namespace("Balloon")]),
            e => e.StartsWith($"{Root}.Machine.VirtualMachine -> {Root}.Balloon.", StringComparison.Ordinal));

    private static string Namespace(string folder) => folder.Contains('.') ? folder : $"{Root}.{folder}";

    private static bool Within(string? ns, string prefix) =>
        ns is not null && (ns == prefix || ns.StartsWith(prefix + ".", StringComparison.Ordinal));

    /// <summary>"From -> To" for every type in <paramref name="from"/> that uses a type in one of <paramref name="to"/>.</summary>
    private static IEnumerable<string> Edges(string from, IEnumerable<string> to)
    {
        string[] forbidden = [.. to];
        return Shared.Types
            .Where(t => Within(t.Namespace?.FullName, from))
            .SelectMany(t => t.Dependencies.Select(d => (From: t, To: d.Target)))
            .Where(e => forbidden.Any(f => Within(e.To.Namespace?.FullName, f)))
            .Select(e => $"{e.From.FullName} -> {e.To.FullName}")
            .Distinct()
            .Order(StringComparer.Ordinal);
    }
}
