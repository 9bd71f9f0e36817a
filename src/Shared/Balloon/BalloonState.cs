using System.Buffers.Binary;

namespace Migration.Shared.Balloon;

/// <summary>
/// The balloon device's state that travels with the VM (QEMU's vmstate for virtio-balloon): the free-page-hint status
/// and command id, the poison value and the negotiated features; and for inflate/deflate, <c>num_pages</c>,
/// <c>actual</c> and the ranges the balloon holds (which QEMU does not send: it sends those pages as zero pages).
/// </summary>
public sealed record BalloonState(HintStatus HintStatus, uint HintCommandId, uint PoisonVal, ulong Features)
{
    public long TargetPages { get; init; }

    public long ActualPages { get; init; }

    /// <summary>The statistics queue's polling interval (0: none), restarted on the target.</summary>
    public int StatsPollingSeconds { get; init; }

    /// <summary>Held pages, sorted and disjoint.</summary>
    public IReadOnlyList<PageRange> Held { get; init; } = [];

    /// <summary>Free page reporting's discard map, sorted and disjoint (a filter only; see the device).</summary>
    public IReadOnlyList<PageRange> Discarded { get; init; } = [];

    /// <summary>The held ranges as bytes: le64 (first, count) pairs, the wire form in the device state.</summary>
    public static byte[] HeldToBytes(IReadOnlyList<PageRange> held)
    {
        ArgumentNullException.ThrowIfNull(held);
        var bytes = new byte[held.Count * 16];
        for (int i = 0; i < held.Count; i++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(i * 16), held[i].First);
            BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan((i * 16) + 8), held[i].Count);
        }

        return bytes;
    }

    /// <summary>Parses <see cref="HeldToBytes"/>; throws <see cref="InvalidDataException"/> for a malformed list.</summary>
    public static List<PageRange> HeldFromBytes(ReadOnlySpan<byte> bytes, long ramPages)
    {
        if (bytes.Length % 16 != 0)
        {
            throw new InvalidDataException($"balloon held ranges of {bytes.Length} bytes (a multiple of 16 expected)");
        }

        var held = new List<PageRange>(bytes.Length / 16);
        for (int i = 0; i < bytes.Length; i += 16)
        {
            long first = BinaryPrimitives.ReadInt64LittleEndian(bytes[i..]);
            long count = BinaryPrimitives.ReadInt64LittleEndian(bytes[(i + 8)..]);
            if (first < 0 || count <= 0 || first > ramPages - count)
            {
                throw new InvalidDataException($"balloon held range [{first}, +{count}) is outside guest RAM");
            }

            if (held.Count > 0 && first < held[^1].End)
            {
                throw new InvalidDataException($"balloon held range [{first}, +{count}) is out of order or overlaps");
            }

            held.Add(new PageRange(first, count));
        }

        return held;
    }
}
