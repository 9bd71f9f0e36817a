namespace Migration.Shared.Protocol;

/// <summary>
/// The versions of the migration wire a Begin declares (<c>BeginRequest.protocol_version</c>). A target accepts its
/// own version and the one before it (Cloud Hypervisor's rule), so either side can be upgraded first; anything else is
/// refused at Begin, before RAM is allocated.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>Version 1: device state is one message, <c>CompleteRequest.device</c>: the virtio-balloon's fields, which the
/// engine, the target and the race fuzzer each mapped field by field. Begin carries no version (0 on the wire).</item>
/// <item>Version 2: device state is <c>CompleteRequest.device_sections</c>, one (id, version, bytes) section per
/// device, written and read by the device alone; the state digest covers each section's id, version and bytes.
/// Version 1's device message is byte for byte the "virtio-balloon" section's version-1 data, so a target reads a
/// version-1 source by wrapping it as that section.</item>
/// </list>
/// </remarks>
public static class ProtocolVersions
{
    public const uint Current = 2;

    public const uint Previous = Current - 1;

    /// <summary>The device whose section version 1's single device message is, and that section's version.</summary>
    public const string Version1DeviceSection = "virtio-balloon";

    public const uint Version1DeviceSectionVersion = 1;

    /// <summary>The version a Begin declares: version 1 predates the field and sends 0.</summary>
    public static uint Declared(uint field) => field == 0 ? 1 : field;

    /// <summary>Why a source declaring <paramref name="field"/> is refused; null when accepted.</summary>
    public static string? Problem(uint field)
    {
        uint version = Declared(field);
        return version is Current or Previous
            ? null
            : $"the source speaks migration protocol version {version}; this target speaks version {Current} and " +
              $"accepts versions {Previous} and {Current}";
    }
}
