using System.Text;
using Google.Protobuf;
using Migration.Protocol;
using DeviceSection = Migration.Shared.Devices.DeviceSection;
using Migration.Shared.Protocol;
using Migration.Shared.Transport;
using Migration.Shared.Verification;

namespace Migration.Target.Receiving;

/// <summary>
/// What a completion carries besides pages, read in the form of the migration's protocol version: the devices'
/// sections (opaque here: the machine hands each to its device) and the state digest over them, the vCPU states and the
/// configuration, to compare with the source's.
/// </summary>
internal sealed record CompletionState(IReadOnlyList<DeviceSection> Devices, ulong Digest)
{
    /// <summary>Throws <see cref="InvalidDataException"/> for device state in the other version's form.</summary>
    public static CompletionState Read(IncomingMigration migration, CompleteRequest request)
    {
        ArgumentNullException.ThrowIfNull(migration);
        ArgumentNullException.ThrowIfNull(request);
        byte[] config = Encoding.UTF8.GetBytes(migration.ConfigJson);
        var vcpus = request.VcpuStates.Select(s => s.Memory);
        if (migration.ProtocolVersion >= 2)
        {
            if (request.Device is not null)
            {
                throw new InvalidDataException(
                    $"protocol version {migration.ProtocolVersion} carries device state in device_sections, but the " +
                    "completion has version 1's device message");
            }

            DeviceSection[] sections = [.. request.DeviceSections.Select(DeviceSectionWire.FromWire)];
            return new CompletionState(sections, MigrationStateDigest.Compute(config, vcpus, sections));
        }

        if (request.DeviceSections.Count > 0)
        {
            throw new InvalidDataException("protocol version 1 carries device state in its device message, but the " +
                "completion has device_sections");
        }

        // Version 1's one device message is the virtio-balloon section's version-1 data (ProtocolVersions).
        byte[] device = request.Device?.ToByteArray() ?? [];
        var section = new DeviceSection(ProtocolVersions.Version1DeviceSection,
            ProtocolVersions.Version1DeviceSectionVersion, device);
        return new CompletionState([section], MigrationStateDigest.ComputeVersion1(config, vcpus, device));
    }
}
