using Google.Protobuf;
using Migration.Shared.Devices;
using WireSection = Migration.Protocol.DeviceSection;

namespace Migration.Shared.Transport;

/// <summary>A device section to and from its wire message: the id, the version and the bytes, unread.</summary>
public static class DeviceSectionWire
{
    public static WireSection ToWire(DeviceSection section)
    {
        ArgumentNullException.ThrowIfNull(section);
        return new WireSection
        {
            Id = section.Id,
            Version = section.Version,
            Data = UnsafeByteOperations.UnsafeWrap(section.Data),
        };
    }

    public static DeviceSection FromWire(WireSection section)
    {
        ArgumentNullException.ThrowIfNull(section);
        return new DeviceSection(section.Id, section.Version, section.Data.Memory);
    }
}
