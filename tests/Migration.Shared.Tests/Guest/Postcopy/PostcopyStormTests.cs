using Migration.Shared.Hosting;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Guest.Postcopy;

/// <summary>
/// The runtime hazard a managed VMM meets in postcopy: a vCPU thread stopped in the kernel on a missing page inside
/// managed code cannot be suspended for a collection, and the page it waits for comes through managed code that the
/// pending collection stops. GuestRam's guard touches a missing page from native code instead. The storm (a program
/// of its own, since the mutant hangs its whole process) forces a collection every millisecond while two vCPUs fault
/// on random pages and the source answers through code that allocates.
/// </summary>
public sealed class PostcopyStormTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task ForcedCollectionsDuringAStormOfFaults_DoNotStopTheGuest()
    {
        await using var storm = Start("guarded");

        int exit = await storm.WaitForExitAsync(Bound);

        Assert.True(exit == 0, string.Join('\n', storm.Output));
        Assert.True(storm.Printed("wrong bytes 0"), string.Join('\n', storm.Output));
    }

    /// <summary>The mutant: the same storm with the vCPUs reading past the guard never finishes.</summary>
    [Fact]
    public async Task WithoutTheGuard_TheStormStopsTheGuestForGood()
    {
        await using var storm = Start("unguarded");

        // Killed when the wait ends: a process that finished its reads would have said so and exited.
        await Assert.ThrowsAsync<TimeoutException>(() => storm.WaitForExitAsync(TimeSpan.FromSeconds(8)));

        Assert.False(storm.Printed("reads done"), string.Join('\n', storm.Output));
    }

    private static ChildProgram Start(string mode) => ChildProgram.Dotnet(
        BuiltPrograms.LocateIn(Path.Combine("tests", "Migration.PostcopyStorm"), "Migration.PostcopyStorm.dll",
            "MIGRATION_POSTCOPY_STORM_DLL"), [mode]);
}
