using Migration.Shared.Transport.Http2;

namespace Migration.Shared.Tests.Transport.Http2;

/// <summary>The page stream client's HPACK decoder against the encodings RFC 7541 defines.</summary>
public sealed class HpackDecoderTests
{
    private static List<KeyValuePair<string, string>> Decode(HpackDecoder decoder, params byte[] block)
    {
        var fields = new List<KeyValuePair<string, string>>();
        decoder.Decode(block, fields);
        return fields;
    }

    [Fact]
    public void Static_entries_and_literals_decode()
    {
        var block = new List<byte> { 0x88 }; // :status 200
        Hpack.WriteLiteral(block, "grpc-status", "0");
        block.AddRange([0x0f, 0x10, 3, (byte)'a', (byte)'/', (byte)'b']); // content-type (index 31), a 4-bit prefix
        var fields = Decode(new HpackDecoder(), [.. block]);
        Assert.Equal(
            [new(":status", "200"), new("grpc-status", "0"), new("content-type", "a/b")],
            fields);
    }

    [Fact]
    public void Indexed_literals_enter_the_dynamic_table_newest_first_and_are_evicted_by_size()
    {
        var decoder = new HpackDecoder(maxTableSize: 100);
        // literal with incremental indexing, new name: "k1: v1" (32 + 4 bytes) then "k2: v2"
        Decode(decoder, 0x40, 2, (byte)'k', (byte)'1', 2, (byte)'v', (byte)'1');
        Decode(decoder, 0x40, 2, (byte)'k', (byte)'2', 2, (byte)'v', (byte)'2');
        Assert.Equal([new("k2", "v2"), new("k1", "v1")], Decode(decoder, 0x80 | 62, 0x80 | 63));
        // a third entry does not fit beside both (3 x 36 > 100): the oldest goes
        Decode(decoder, 0x40, 2, (byte)'k', (byte)'3', 2, (byte)'v', (byte)'3');
        Assert.Equal([new("k3", "v3"), new("k2", "v2")], Decode(decoder, 0x80 | 62, 0x80 | 63));
        Assert.Throws<HpackException>(() => Decode(decoder, 0x80 | 64));
        // a size update to 0 empties it
        Decode(decoder, 0x20);
        Assert.Throws<HpackException>(() => Decode(decoder, 0x80 | 62));
    }

    [Fact]
    public void Malformed_blocks_are_refused_not_misread()
    {
        var decoder = new HpackDecoder();
        Assert.Contains("Huffman", Assert.Throws<HpackException>(
            () => Decode(decoder, 0x00, 0x82, 0xff, 0xff, 1, (byte)'x')).Message, StringComparison.Ordinal);
        Assert.Throws<HpackException>(() => Decode(decoder, 0x00, 5, (byte)'a')); // string past the end
        Assert.Throws<HpackException>(() => Decode(decoder, 0xff, 0x80, 0x80)); // integer never ends
        Assert.Throws<HpackException>(() => Decode(decoder, 0x80)); // index 0
        Assert.Throws<HpackException>(() => Decode(decoder, 0x3f, 0xe2, 0x1f)); // size update to 4097
    }
}
