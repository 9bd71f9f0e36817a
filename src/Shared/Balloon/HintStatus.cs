namespace Migration.Shared.Balloon;

/// <summary>
/// Free-page-hint states of the balloon device, with QEMU's values (they travel with the device state).
/// </summary>
public enum HintStatus : uint
{
    Stop = 0,
    Requested = 1,
    Start = 2,
    Done = 3,
}
