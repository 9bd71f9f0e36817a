using System.Buffers;

namespace Migration.TestSupport;

/// <summary>Byte sequences in two segments, as Kestrel hands over a message that spans its receive buffers.</summary>
public static class SegmentedSequence
{
    public static ReadOnlySequence<byte> Split(ReadOnlyMemory<byte> bytes, int at)
    {
        var first = new Segment(bytes[..at], 0);
        var second = first.Append(bytes[at..]);
        return new ReadOnlySequence<byte>(first, 0, second, second.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
