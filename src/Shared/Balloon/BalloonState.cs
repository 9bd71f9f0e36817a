namespace Migration.Shared.Balloon;

/// <summary>
/// The balloon device's state that travels with the VM (QEMU's vmstate for virtio-balloon): the free-page-hint status
/// and command id, the poison value and the negotiated features.
/// </summary>
public sealed record BalloonState(HintStatus HintStatus, uint HintCommandId, uint PoisonVal, ulong Features);
