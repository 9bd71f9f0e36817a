namespace Migration.Shared.Balloon;

/// <summary>
/// What happens to the free-page-hint device: migration steps (H2, H6), guest buffers (H3), errors (H9).
/// </summary>
public enum HintEvent
{
    /// <summary>The device joins a migration at setup (logging is on, H1).</summary>
    Attach,

    /// <summary>H2: a dirty-log sync is about to run; no hint may be applied across it.</summary>
    StopBeforeSync,

    /// <summary>H2: a sync ran while the VM runs; the device issues a new command id.</summary>
    NewCommandId,

    /// <summary>H2: the sync after the VM stopped (stop-and-copy); hinting is over.</summary>
    FinalSync,

    /// <summary>H6: the migration ended (completed, failed or cancelled).</summary>
    Detach,

    /// <summary>H9: a malformed buffer; hinting stops for this migration.</summary>
    DeviceError,

    /// <summary>H3: an id buffer equal to the current command id (the guest's START for this run).</summary>
    CurrentIdBuffer,

    /// <summary>H3: any other id buffer: STOP (0), or an id of another run.</summary>
    OtherIdBuffer,
}

/// <summary>
/// The free-page-hint protocol as one pure table: status x event -> status. The device feeds it every event and
/// holds nothing else that decides the status.
/// </summary>
/// <remarks>
/// <code>
///               Attach  StopBeforeSync  NewCommandId  FinalSync  Detach  DeviceError  CurrentIdBuffer  OtherIdBuffer
///   STOP        STOP    STOP            REQUESTED     DONE       DONE    DONE         STOP (H3: no     STOP
///                                                                                      replayed START)
///   REQUESTED   STOP    STOP            REQUESTED     DONE       DONE    DONE         START            REQUESTED
///   START       STOP    STOP            REQUESTED     DONE       DONE    DONE         STOP             STOP
///   DONE        STOP    DONE            REQUESTED     DONE       DONE    DONE         DONE             DONE
/// </code>
/// Only REQUESTED moves to START, and only on the current id (H3): an old run's START arriving late (R1) or a replayed
/// START after STOP (R10) never reopens hinting. Any id buffer while START means the guest stopped this run.
/// A block is applied only in START and only when it carries the current id (H4).
/// </remarks>
public static class HintStateMachine
{
    public static HintStatus Next(HintStatus status, HintEvent e) => e switch
    {
        HintEvent.Attach => HintStatus.Stop,
        HintEvent.StopBeforeSync => status is HintStatus.Requested or HintStatus.Start ? HintStatus.Stop : status,
        HintEvent.NewCommandId => HintStatus.Requested,
        HintEvent.FinalSync or HintEvent.Detach or HintEvent.DeviceError => HintStatus.Done,
        HintEvent.CurrentIdBuffer => status switch
        {
            HintStatus.Requested => HintStatus.Start,
            HintStatus.Start => HintStatus.Stop,
            _ => status,
        },
        HintEvent.OtherIdBuffer => status == HintStatus.Start ? HintStatus.Stop : status,
        _ => throw new ArgumentOutOfRangeException(nameof(e), e, "unknown hint event"),
    };

    /// <summary>H4: a free block is applied only while START and only with the current command id.</summary>
    public static bool AppliesBlock(HintStatus status, bool currentId) => status == HintStatus.Start && currentId;

    /// <summary>
    /// The id the guest reads from config: the current id while REQUESTED or START, 0 when stopped, 1 when done.
    /// </summary>
    public static uint ConfigCommandId(HintStatus status, uint currentId) => status switch
    {
        HintStatus.Requested or HintStatus.Start => currentId,
        HintStatus.Stop => HintCommandId.Stop,
        _ => HintCommandId.Done,
    };
}
