using System.Buffers.Binary;
using System.IO.Hashing;

namespace Migration.Shared.Verification;

/// <summary>
/// One digest over everything a target runs a guest from besides its pages: the guest configuration as it crossed at
/// Begin, every vCPU state and the device state, each length-prefixed so no two different inputs run together. The
/// source computes it from what it sent; the target from what it received; a bit flipped in flight in any of them
/// makes the two differ, and the guest is not resumed.
/// </summary>
public static class MigrationStateDigest
{
    public static ulong Compute(ReadOnlySpan<byte> configuration, IEnumerable<ReadOnlyMemory<byte>> vcpuStates,
        ReadOnlySpan<byte> deviceState)
    {
        ArgumentNullException.ThrowIfNull(vcpuStates);
        var hash = new XxHash64();
        Append(hash, configuration);
        foreach (var state in vcpuStates)
        {
            Append(hash, state.Span);
        }

        Append(hash, deviceState);
        return hash.GetCurrentHashAsUInt64();
    }

    private static void Append(XxHash64 hash, ReadOnlySpan<byte> part)
    {
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(length, part.Length);
        hash.Append(length);
        hash.Append(part);
    }
}
