using Migration.Shared.Balloon;

namespace Migration.Shared.Tests.Balloon;

/// <summary>The hint protocol's table, cell by cell: every status against every event.</summary>
public sealed class HintStateMachineTests
{
    private const HintStatus Stop = HintStatus.Stop;
    private const HintStatus Req = HintStatus.Requested;
    private const HintStatus Start = HintStatus.Start;
    private const HintStatus Done = HintStatus.Done;

    /// <summary>
    /// The expected table, written out by hand from the rules (H2, H3, H6, H9): rows are the status before, columns the
    /// events in <see cref="HintEvent"/> order.
    /// </summary>
    private static readonly Dictionary<HintStatus, HintStatus[]> Expected = new()
    {
        //               Attach StopBeforeSync NewCommandId FinalSync Detach DeviceError CurrentId OtherId
        [Stop] = [Stop, Stop, Req, Done, Done, Done, Stop, Stop],
        [Req] = [Stop, Stop, Req, Done, Done, Done, Start, Req],
        [Start] = [Stop, Stop, Req, Done, Done, Done, Stop, Stop],
        [Done] = [Stop, Done, Req, Done, Done, Done, Done, Done],
    };

    public static TheoryData<HintStatus, HintEvent, HintStatus> Cells()
    {
        var data = new TheoryData<HintStatus, HintEvent, HintStatus>();
        foreach (var status in Enum.GetValues<HintStatus>())
        {
            foreach (var e in Enum.GetValues<HintEvent>())
            {
                data.Add(status, e, Expected[status][(int)e]);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cells))]
    public void EveryStatusAndEvent_LeadsWhereTheRulesSay(HintStatus before, HintEvent e, HintStatus after) =>
        Assert.Equal(after, HintStateMachine.Next(before, e));

    [Fact]
    public void TheTable_CoversEveryStatusAndEvent()
    {
        Assert.Equal(Enum.GetValues<HintStatus>().Length, Expected.Count);
        Assert.All(Expected.Values, row => Assert.Equal(Enum.GetValues<HintEvent>().Length, row.Length));
    }

    [Fact]
    public void OnlyRequestedStartsHinting_AndOnlyOnTheCurrentId_H3()
    {
        foreach (var status in Enum.GetValues<HintStatus>())
        {
            foreach (var e in Enum.GetValues<HintEvent>())
            {
                if (HintStateMachine.Next(status, e) == Start)
                {
                    Assert.Equal((Req, HintEvent.CurrentIdBuffer), (status, e));
                }
            }
        }
    }

    [Theory]
    [InlineData(Start, true, true)]
    [InlineData(Start, false, false)]
    [InlineData(Req, true, false)]
    [InlineData(Stop, true, false)]
    [InlineData(Done, true, false)]
    public void ABlockApplies_OnlyInStartWithTheCurrentId_H4(HintStatus status, bool currentId, bool applies) =>
        Assert.Equal(applies, HintStateMachine.AppliesBlock(status, currentId));

    [Theory]
    [InlineData(Req, 0x80000005u, 0x80000005u)]
    [InlineData(Start, 0x80000005u, 0x80000005u)]
    [InlineData(Stop, 0x80000005u, HintCommandId.Stop)]
    [InlineData(Done, 0x80000005u, HintCommandId.Done)]
    public void TheGuestReads_TheIdOnlyWhileARunIsOpen(HintStatus status, uint current, uint config) =>
        Assert.Equal(config, HintStateMachine.ConfigCommandId(status, current));

    [Fact]
    public void CommandIds_GrowByOne_AndWrapAboveTheMinimum()
    {
        Assert.Equal(HintCommandId.Min + 1, HintCommandId.Next(HintCommandId.Min));
        Assert.Equal(0x80000006u, HintCommandId.Next(0x80000005u));
        Assert.Equal(HintCommandId.Min + 1, HintCommandId.Next(uint.MaxValue));
    }
}
