using Grpc.Core;
using Migration.Shared.Guest;
using Migration.Shared.Machine;
using Migration.Shared.Transport;
using Migration.Target.Receiving;

namespace Migration.Target.Tests.Receiving;

/// <summary>
/// The target's side of delta pages: a delta applies only onto the copy it names, received earlier in the same
/// migration; every other delta is refused naming the page, and nothing of its batch is written.
/// </summary>
public sealed class DeltaPagesTests
{
    private const int Page = PageGeometry.PageSize;

    private static IncomingMigration Receiving(bool deltas = true) =>
        new("m", new GuestConfig { RamBytes = 4L << 20, Vcpus = 1 }, "{}", MigrationOwner.New(null),
            GuestRam.Allocate(4L << 20), TimeProvider.System)
        {
            DeltaPages = deltas,
        };

    private static ReceivedBatch Batch(uint round, params (long Pfn, PageEncodingKind Kind, byte[] Payload)[] pages) =>
        TestBatches.Build(round, pages);

    private static byte[] Filled(byte value)
    {
        var page = new byte[Page];
        Array.Fill(page, value);
        return page;
    }

    /// <summary>A delta against the round-<paramref name="baseRound"/> copy: byte <paramref name="at"/> set.</summary>
    private static byte[] Delta(uint baseRound, int at, byte value)
    {
        var output = new byte[16];
        int n = DeltaPayload.WriteBase(output, baseRound);
        var old = new byte[Page];
        var current = new byte[Page];
        current[at] = value;
        n += Xbzrle.Encode(old, current, output.AsSpan(n));
        return output[..n];
    }

    private static RpcException Refused(IncomingMigration migration, ReceivedBatch batch)
    {
        var ex = Assert.Throws<RpcException>(() => migration.Apply(batch));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        return ex;
    }

    [Fact]
    public void ADelta_AppliesOntoTheCopyItNames()
    {
        using var migration = Receiving();
        migration.Apply(Batch(1, (5, PageEncodingKind.Raw, new byte[Page]), (6, PageEncodingKind.Zero, [])));
        migration.Apply(Batch(2, (5, PageEncodingKind.Delta, Delta(1, 10, 0xAB)),
            (6, PageEncodingKind.Delta, Delta(1, 4095, 0xCD))));

        Assert.Equal(0xAB, migration.Ram.Page(5)[10]);
        Assert.Equal(0xCD, migration.Ram.Page(6)[4095]);
        Assert.Equal(2, migration.PagesDelta);
    }

    [Fact]
    public void ADeltaForAPageNeverReceived_FailsNamingIt_AndNothingOfItsBatchIsWritten()
    {
        using var migration = Receiving();
        var ex = Refused(migration, Batch(3, (1, PageEncodingKind.Raw, Filled(7)),
            (9, PageEncodingKind.Delta, Delta(2, 0, 1))));

        Assert.Contains("delta for page 9, which this target has not received", ex.Status.Detail,
            StringComparison.Ordinal);
        Assert.True(migration.Ram.Page(1).IndexOfAnyExcept((byte)0) < 0, "the batch's raw page was written");
        Assert.Equal(0, migration.PagesReceived);
    }

    [Fact]
    public void ADeltaAgainstAnotherCopy_Fails_NamingBothRounds()
    {
        using var migration = Receiving();
        migration.Apply(Batch(1, (4, PageEncodingKind.Raw, Filled(1))));
        migration.Apply(Batch(3, (4, PageEncodingKind.Raw, Filled(3))));
        var before = migration.Ram.Page(4).ToArray();

        var ex = Refused(migration, Batch(4, (4, PageEncodingKind.Delta, Delta(1, 0, 9))));

        Assert.Contains("delta for page 4 against its round-1 copy, but this target holds the copy of round 3",
            ex.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(before, migration.Ram.Page(4).ToArray());
    }

    [Fact]
    public void ADeltaOlderThanTheCopyHeld_IsDropped_AsAnOlderRawCopyIs()
    {
        using var migration = Receiving();
        migration.Apply(Batch(1, (4, PageEncodingKind.Raw, Filled(1))));
        migration.Apply(Batch(3, (4, PageEncodingKind.Raw, Filled(3)))); // round 3 on another channel came first

        var (pages, applied) = migration.Apply(Batch(2, (4, PageEncodingKind.Delta, Delta(1, 0, 9))));

        Assert.Equal((1L, 0L), (pages, applied));
        Assert.Equal(Filled(3), migration.Ram.Page(4).ToArray());
    }

    public static TheoryData<byte[], string> Undecodable => new()
    {
        { [], "the delta is empty" },
        { [1, 0], "without its literal run (truncated)" },
        { [1, 0, 5, 1, 2], "has only 2 (truncated)" },
        { [1, 0xFF, 0x1F, 2, 7, 7], "runs past the page's end" },
        { [1, 0, 0x80, 0x20, .. new byte[Page], 0], "follow the runs, which already cover the page" },
        { [1, 0x80, 0x80, 0x01, 1, 1], "more than 2 bytes" },
        { [5, 0, 1, 1], "names round 5 as its base, which is not older than its own round 2" },
    };

    [Theory]
    [MemberData(nameof(Undecodable))]
    public void ADeltaThatDoesNotDecodeToOnePage_Fails_AndNothingOfItsBatchIsWritten(byte[] delta, string expected)
    {
        using var migration = Receiving();
        migration.Apply(Batch(1, (8, PageEncodingKind.Raw, Filled(1))));

        var ex = Refused(migration, Batch(2, (3, PageEncodingKind.Raw, Filled(3)), (8, PageEncodingKind.Delta, delta)));

        Assert.Contains("page 8", ex.Status.Detail, StringComparison.Ordinal);
        Assert.Contains(expected, ex.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(Filled(1), migration.Ram.Page(8).ToArray());
        Assert.True(migration.Ram.Page(3).IndexOfAnyExcept((byte)0) < 0, "the batch's raw page was written");
    }

    [Fact]
    public void ADelta_IsRefused_WhenTheSourceDidNotOfferDeltasAtBegin()
    {
        using var migration = Receiving(deltas: false);
        migration.Apply(Batch(1, (2, PageEncodingKind.Raw, Filled(1))));

        var ex = Refused(migration, Batch(2, (2, PageEncodingKind.Delta, Delta(1, 0, 1))));

        Assert.Contains("page 2 is a delta, but this migration did not offer delta pages", ex.Status.Detail,
            StringComparison.Ordinal);
    }
}
