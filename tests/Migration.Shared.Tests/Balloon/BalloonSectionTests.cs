using Google.Protobuf;
using Migration.Shared.Balloon;
using Migration.Shared.Devices;

namespace Migration.Shared.Tests.Balloon;

/// <summary>
/// The balloon's migration section: every state it can be in comes back field for field, and every section it cannot
/// read is refused with an error that names it.
/// </summary>
public sealed class BalloonSectionTests
{
    private const long RamPages = 1 << 16; // 256 MiB

    public static TheoryData<int> Seeds => [.. Enumerable.Range(1, 8)];

    [Theory]
    [MemberData(nameof(Seeds))]
    public void RoundTrip_GivesBackEveryField(int seed)
    {
        var random = new Random(seed);
        for (int i = 0; i < 200; i++)
        {
            var state = Generate(random);
            var section = BalloonSection.Save(state);
            Assert.Equal(BalloonSection.Id, section.Id);
            Assert.Equal(BalloonSection.Version, section.Version);

            var back = BalloonSection.Load(section, RamPages);
            Assert.Equal(state.HintStatus, back.HintStatus);
            Assert.Equal(state.HintCommandId, back.HintCommandId);
            Assert.Equal(state.PoisonVal, back.PoisonVal);
            Assert.Equal(state.Features, back.Features);
            Assert.Equal(state.TargetPages, back.TargetPages);
            Assert.Equal(state.ActualPages, back.ActualPages);
            Assert.Equal(state.StatsPollingSeconds, back.StatsPollingSeconds);
            Assert.Equal(state.Held, back.Held);
            Assert.Equal(state.Discarded, back.Discarded);
        }
    }

    [Fact]
    public void AnotherDevicesSection_IsRefusedNamingIt()
    {
        var section = BalloonSection.Save(Generate(new Random(1))) with { Id = "virtio-net" };
        var ex = Assert.Throws<InvalidDataException>(() => BalloonSection.Load(section, RamPages));
        Assert.StartsWith("device section 'virtio-net' version 1:", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AVersionThisBuildDoesNotRead_IsRefusedNamingIt()
    {
        var section = BalloonSection.Save(Generate(new Random(2))) with { Version = BalloonSection.Version + 1 };
        var ex = Assert.Throws<InvalidDataException>(() => BalloonSection.Load(section, RamPages));
        Assert.StartsWith("device section 'virtio-balloon' version 2:", ex.Message, StringComparison.Ordinal);
        Assert.Contains("reads version 1", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void BytesThatDoNotParse_AreRefusedNamingTheSection(int seed)
    {
        var random = new Random(seed);
        var data = BalloonSection.Save(Generate(random)).Data.ToArray();
        // Cut the message inside a field: protobuf cannot read a length or a varint that runs past the end.
        var cut = new DeviceSection(BalloonSection.Id, BalloonSection.Version, data.AsMemory(0, data.Length - 1));
        var ex = Assert.Throws<InvalidDataException>(() => BalloonSection.Load(cut, RamPages));
        Assert.StartsWith("device section 'virtio-balloon' version 1:", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void HeldPagesOutsideGuestRam_AreRefusedNamingTheSection()
    {
        var state = Generate(new Random(4)) with { Held = [new PageRange(RamPages - 1, 2)] };
        var ex = Assert.Throws<InvalidDataException>(() =>
            BalloonSection.Load(BalloonSection.Save(state), RamPages));
        Assert.StartsWith("device section 'virtio-balloon' version 1:", ex.Message, StringComparison.Ordinal);
        Assert.Contains("outside guest RAM", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AHeldListOfTornLength_IsRefusedNamingTheSection()
    {
        var message = VirtioBalloonSection.Parser.ParseFrom(BalloonSection.Save(Generate(new Random(5))).Data.Span);
        message.Held = ByteString.CopyFrom(new byte[15]);
        var section = new DeviceSection(BalloonSection.Id, BalloonSection.Version, message.ToByteArray());
        var ex = Assert.Throws<InvalidDataException>(() => BalloonSection.Load(section, RamPages));
        Assert.Contains("a multiple of 16", ex.Message, StringComparison.Ordinal);
        Assert.StartsWith("device section 'virtio-balloon'", ex.Message, StringComparison.Ordinal);
    }

    /// <summary>A state with every field drawn, its range lists sorted and disjoint, as a device keeps them.</summary>
    private static BalloonState Generate(Random random) =>
        new((HintStatus)random.Next(4), (uint)random.NextInt64(uint.MaxValue + 1L), (uint)random.Next(256),
            (ulong)random.NextInt64())
        {
            TargetPages = random.NextInt64(RamPages + 1),
            ActualPages = random.NextInt64(RamPages + 1),
            StatsPollingSeconds = random.Next(2) == 0 ? 0 : random.Next(1, 3600),
            Held = Ranges(random),
            Discarded = Ranges(random),
        };

    private static List<PageRange> Ranges(Random random)
    {
        var ranges = new List<PageRange>();
        long next = 0;
        int count = random.Next(4) == 0 ? 0 : random.Next(1, 40);
        for (int i = 0; i < count && next < RamPages; i++)
        {
            long first = next + random.NextInt64(1, 2000);
            long length = random.NextInt64(1, 600);
            if (first + length > RamPages)
            {
                break;
            }

            ranges.Add(new PageRange(first, length));
            next = first + length; // a gap of at least one page: the device merges adjacent ranges
        }

        return ranges;
    }
}
