using System.Buffers.Binary;
using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Balloon;

/// <summary>
/// What the guest tells the host on the events queue (our feature bit 52): one 8-byte buffer
/// <c>{le32 type, le32 value}</c> per event.
/// </summary>
public enum BalloonGuestEvent : uint
{
    /// <summary>The guest's memory is under pressure; the value is the level (1 low, 2 medium, 3 critical).</summary>
    Pressure = 1,

    /// <summary>The guest could not allocate pages to reach the target ("out of puff"); the value is 0.</summary>
    PuffFailure = 2,
}

/// <summary>The events-queue wire format.</summary>
public static class BalloonEventWire
{
    public const int Bytes = 8;

    public static byte[] Encode(BalloonGuestEvent type, uint value)
    {
        var buffer = new byte[Bytes];
        BinaryPrimitives.WriteUInt32LittleEndian(buffer, (uint)type);
        BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(4), value);
        return buffer;
    }

    public static byte[] Pressure(MemoryPressure level) => Encode(BalloonGuestEvent.Pressure, (uint)level);

    /// <summary>Parses one event; returns an error, or null.</summary>
    public static string? Decode(ReadOnlySpan<byte> buffer, out BalloonGuestEvent type, out uint value)
    {
        type = 0;
        value = 0;
        if (buffer.Length != Bytes)
        {
            return $"an event buffer of {buffer.Length} bytes (8 expected)";
        }

        type = (BalloonGuestEvent)BinaryPrimitives.ReadUInt32LittleEndian(buffer);
        value = BinaryPrimitives.ReadUInt32LittleEndian(buffer[4..]);
        return type switch
        {
            BalloonGuestEvent.Pressure when value is >= 1 and <= 3 => null,
            BalloonGuestEvent.Pressure => $"a pressure event with level {value} (1 to 3 expected)",
            BalloonGuestEvent.PuffFailure => null,
            _ => $"an event of unknown type {(uint)type}",
        };
    }
}

/// <summary>What the host side of the balloon tells its listeners (the management API's event stream).</summary>
public enum BalloonNotificationKind
{
    /// <summary>The host set a new target (num_pages), or the device lowered it after a guest event.</summary>
    TargetChanged,

    /// <summary>The guest updated <c>actual</c>.</summary>
    ActualChanged,

    /// <summary>The guest reported memory pressure.</summary>
    Pressure,

    /// <summary>The guest could not reach the target.</summary>
    PuffFailure,

    /// <summary>The device refused a buffer (a rogue or broken driver).</summary>
    DeviceError,
}

/// <summary>One notification; <see cref="Level"/> only for pressure, <see cref="Message"/> only for errors.</summary>
public sealed record BalloonNotification(BalloonNotificationKind Kind, long TargetPages, long ActualPages,
    MemoryPressure Level = MemoryPressure.None, string? Message = null);
