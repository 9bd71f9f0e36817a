namespace Migration.Shared.Devices;

/// <summary>
/// One device's migration state as the device saved it: the section's id (the device's name on the wire), the version
/// of the device's own format, and the bytes. The machine collects the sections and hands each back to the device
/// that owns its id; the engine, the transport and the target carry them without reading them (Cloud Hypervisor's
/// snapshot sections, QEMU's vmstate sections).
/// </summary>
public sealed record DeviceSection(string Id, uint Version, ReadOnlyMemory<byte> Data)
{
    /// <summary>A section its device cannot take: the error names the section, so a refusal says which device.</summary>
    public InvalidDataException Refused(string why) => new($"device section '{Id}' version {Version}: {why}");
}
