using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Migration.Shared.Devices;

namespace Migration.Shared.Verification;

/// <summary>
/// One digest over everything a target runs a guest from besides its pages: the guest configuration as it crossed at
/// Begin, every vCPU state and the devices' state, each length-prefixed so no two different inputs run together. The
/// source computes it from what it sent; the target from what it received; a bit flipped in flight in any of them
/// makes the two differ, and the guest is not resumed.
/// </summary>
public static class MigrationStateDigest
{
    /// <summary>Protocol version 2 on: every device section's id, version and data, in the order sent.</summary>
    public static ulong Compute(ReadOnlySpan<byte> configuration, IEnumerable<ReadOnlyMemory<byte>> vcpuStates,
        IEnumerable<DeviceSection> devices)
    {
        ArgumentNullException.ThrowIfNull(devices);
        var hash = Begin(configuration, vcpuStates);
        Span<byte> version = stackalloc byte[4];
        foreach (var section in devices)
        {
            Append(hash, Encoding.UTF8.GetBytes(section.Id));
            BinaryPrimitives.WriteUInt32LittleEndian(version, section.Version);
            hash.Append(version);
            Append(hash, section.Data.Span);
        }

        return hash.GetCurrentHashAsUInt64();
    }

    /// <summary>Protocol version 1: its one device-state message, as bytes.</summary>
    public static ulong ComputeVersion1(ReadOnlySpan<byte> configuration,
        IEnumerable<ReadOnlyMemory<byte>> vcpuStates, ReadOnlySpan<byte> deviceState)
    {
        var hash = Begin(configuration, vcpuStates);
        Append(hash, deviceState);
        return hash.GetCurrentHashAsUInt64();
    }

    private static XxHash64 Begin(ReadOnlySpan<byte> configuration, IEnumerable<ReadOnlyMemory<byte>> vcpuStates)
    {
        ArgumentNullException.ThrowIfNull(vcpuStates);
        var hash = new XxHash64();
        Append(hash, configuration);
        foreach (var state in vcpuStates)
        {
            Append(hash, state.Span);
        }

        return hash;
    }

    private static void Append(XxHash64 hash, ReadOnlySpan<byte> part)
    {
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(length, part.Length);
        hash.Append(length);
        hash.Append(part);
    }
}
