using System.Buffers;
using Migration.TestSupport;
using Migration.Shared.Transport;

namespace Migration.Shared.Tests.Transport;

public sealed class PageBatchWireTests
{
    private static byte[] Encode(uint round, long[] pfns, byte[] kinds, int[] lengths, byte[] payload)
    {
        var layout = PageBatchWire.Measure(round, pfns, kinds, lengths, payload.Length);
        var buffer = new byte[layout.MessageLength];
        int written = PageBatchWire.Write(buffer, layout, round, pfns, kinds, lengths, payload);
        Assert.Equal(buffer.Length, written);
        return buffer;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(300)]
    public void RoundTrip_AcrossSegmentBoundaries(int splitAt)
    {
        var payload = new byte[4096 + 100];
        new Random(3).NextBytes(payload);
        byte[] message = Encode(5, [0, 300, 1L << 30], [0, 1, 2], [0, 4096, 100], payload);

        var batch = new ReceivedBatch();
        Assert.Null(PageBatchWire.Read(SegmentedSequence.Split(message, Math.Min(splitAt, message.Length - 1)), batch));
        Assert.Equal(5u, batch.Round);
        Assert.Equal([0ul, 300ul, 1ul << 30], batch.Pfns.ToArray());
        Assert.Equal([(byte)0, (byte)1, (byte)2], batch.Kinds.ToArray());
        Assert.Equal([0u, 4096u, 100u], batch.Lengths.ToArray());
        Assert.Equal(payload, batch.Payload.ToArray());

        // Walked page by page as the target decodes, however the payload is split across buffers.
        Span<byte> scratch = stackalloc byte[PageCodec.MaxEncodedLength];
        var pages = new PagePayloadReader(batch.Payload, scratch);
        Assert.True(pages.Next(0).IsEmpty);
        Assert.Equal(payload.AsSpan(0, 4096), pages.Next(4096));
        Assert.Equal(payload.AsSpan(4096, 100), pages.Next(100));
    }

    [Fact]
    public void UnpackedRepeatedFields_AndUnknownFields_AreAccepted()
    {
        // field 2 varint 9, field 3 varint 0, field 4 varint 0, unknown field 9 (bytes "xy"), unknown field 10 fixed32.
        byte[] message = [0x10, 9, 0x18, 0, 0x20, 0, 0x4A, 2, (byte)'x', (byte)'y', 0x55, 1, 2, 3, 4];
        var batch = new ReceivedBatch();
        Assert.Null(PageBatchWire.Read(new ReadOnlySequence<byte>(message), batch));
        Assert.Equal([9ul], batch.Pfns.ToArray());
        Assert.Equal(0, batch.PayloadLength);
    }

    [Theory]
    // packed length beyond the end
    [InlineData(new byte[] { 0x12, 5, 1, 2 }, ProtocolErrorKind.BadLength, "packed field 2")]
    [InlineData(new byte[] { 0x2A, 0x80 }, ProtocolErrorKind.BadLength, "payload length")]    // truncated varint length
    [InlineData(new byte[] { 0x10, 1, 0x18, 1 }, ProtocolErrorKind.Inconsistent,
        "1 page numbers, 1 encodings and 0 lengths")]
    // groups are not protobuf 3
    [InlineData(new byte[] { 0x0B }, ProtocolErrorKind.UnsupportedWireType, "wire type 3")]
    [InlineData(new byte[] { 0x2A, 1, 0, 0x2A, 1, 0 }, ProtocolErrorKind.Duplicate, "payload appears twice")]
    [InlineData(new byte[] { 0x10 }, ProtocolErrorKind.Truncated, "truncated field 2")]
    public void MalformedMessages_HaveAKindAndADetail(byte[] message, ProtocolErrorKind kind, string expected)
    {
        var batch = new ReceivedBatch();
        var error = PageBatchWire.Read(new ReadOnlySequence<byte>(message), batch);
        Assert.NotNull(error);
        Assert.Equal(kind, error.Value.Kind);
        Assert.Contains(expected, error.Value.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void ReusedBatch_ForgetsThePreviousMessage()
    {
        var batch = new ReceivedBatch();
        Assert.Null(PageBatchWire.Read(new ReadOnlySequence<byte>(Encode(3, [1, 2], [0, 0], [0, 0], [])), batch));
        Assert.Null(PageBatchWire.Read(new ReadOnlySequence<byte>(Encode(0, [7], [0], [0], [])), batch));
        Assert.Equal(0u, batch.Round);
        Assert.Equal([7ul], batch.Pfns.ToArray());
    }
}
