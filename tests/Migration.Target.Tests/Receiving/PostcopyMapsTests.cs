using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Machine;
using Migration.Shared.Transport;
using Migration.Target.Receiving;

namespace Migration.Target.Tests.Receiving;

/// <summary>
/// Which pages a switch to postcopy resolves on the target without the source (P2, P3): those no batch carried and
/// the source does not still send.
/// </summary>
public sealed class PostcopyMapsTests
{
    [Fact]
    public void NeverSent_IsWhatNoBatchCarried_LessWhatTheSourceStillSends()
    {
        using var migration = new IncomingMigration("m", new GuestConfig { RamBytes = 4L << 20, Vcpus = 1 }, "{}",
            MigrationOwner.New(null), GuestRam.Allocate(4L << 20), TimeProvider.System);
        migration.Apply(TestBatches.Build(0, (1, PageEncodingKind.Raw, new byte[PageGeometry.PageSize]),
            (2, PageEncodingKind.Zero, [])));
        var fetch = new PageBitmap(1024);
        fetch.Set(2); // carried as zero in round 0, dirtied since: the source sends it again
        fetch.Set(3); // never carried, in use: the source sends it

        var never = migration.NeverSent(fetch);

        Assert.False(never.Get(1), "carried as data: held here");
        Assert.False(never.Get(2), "still to come from the source");
        Assert.False(never.Get(3), "still to come from the source");
        Assert.True(never.Get(0), "never carried and not to come: skipped by a hint, the balloon or reporting");
        Assert.Equal(1024 - 3, never.Count);
    }

    [Fact]
    public void NeverSent_RefusesAMapOfAnotherSize()
    {
        using var migration = new IncomingMigration("m", new GuestConfig { RamBytes = 4L << 20, Vcpus = 1 }, "{}",
            MigrationOwner.New(null), GuestRam.Allocate(4L << 20), TimeProvider.System);

        var ex = Assert.Throws<ArgumentException>(() => migration.NeverSent(new PageBitmap(2048)));
        Assert.Contains("2048", ex.Message);
    }
}
