using System.Text;

namespace Migration.Shared.Transport.Http2;

/// <summary>
/// The little of HPACK (RFC 7541) the page stream's client needs. Requests are encoded with no compression at all (every
/// field a literal that is never indexed), which every decoder reads and which leaves no table state to keep. Responses
/// are decoded in full (static and dynamic table) except Huffman-coded strings, which the target never sends: .NET's
/// HPACK encoder does not Huffman-code. A Huffman-coded string is refused with a clear error, never misread.
/// </summary>
internal static class Hpack
{
    /// <summary>Appends <c>name: value</c> as a literal field without indexing, with a literal name (7.2.2).</summary>
    public static void WriteLiteral(List<byte> block, string name, string value)
    {
        ArgumentNullException.ThrowIfNull(block);
        block.Add(0x00);
        WriteString(block, name);
        WriteString(block, value);
    }

    /// <summary>Appends an indexed field (6.1): a whole field of the static table.</summary>
    public static void WriteIndexed(List<byte> block, int index) => WriteInteger(block, 0x80, 7, index);

    private static void WriteString(List<byte> block, string value)
    {
        byte[] bytes = Encoding.ASCII.GetBytes(value);
        WriteInteger(block, 0x00, 7, bytes.Length);
        block.AddRange(bytes);
    }

    /// <summary>An integer with an N-bit prefix (5.1); <paramref name="pattern"/> holds the bits above the prefix.</summary>
    internal static void WriteInteger(List<byte> block, byte pattern, int prefixBits, int value)
    {
        int max = (1 << prefixBits) - 1;
        if (value < max)
        {
            block.Add((byte)(pattern | value));
            return;
        }

        block.Add((byte)(pattern | max));
        value -= max;
        while (value >= 0x80)
        {
            block.Add((byte)(value & 0x7F | 0x80));
            value >>= 7;
        }

        block.Add((byte)value);
    }

    /// <summary>Static table indices this client sends.</summary>
    public const int MethodPost = 3;

    public const int SchemeHttp = 6;

    public const int SchemeHttps = 7;

    /// <summary>RFC 7541, appendix A: index 1 first.</summary>
    internal static readonly (string Name, string Value)[] StaticTable =
    [
        (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
        (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
        (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
        ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
        ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
        ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
        ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
        ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
        ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
        ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
        ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
        ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
    ];
}

/// <summary>
/// Decodes one connection's header blocks, in order (the dynamic table is the connection's). Throws
/// <see cref="HpackException"/> for anything malformed.
/// </summary>
internal sealed class HpackDecoder(int maxTableSize = 4096)
{
    private readonly LinkedList<(string Name, string Value)> _dynamic = []; // newest first
    private int _tableSize;
    private readonly int _maxTableSize = maxTableSize;
    private int _tableLimit = maxTableSize;

    public void Decode(ReadOnlySpan<byte> block, List<KeyValuePair<string, string>> fields)
    {
        ArgumentNullException.ThrowIfNull(fields);
        int pos = 0;
        while (pos < block.Length)
        {
            byte first = block[pos];
            if ((first & 0x80) != 0) // indexed field (6.1)
            {
                var (name, value) = Lookup(ReadInteger(block, ref pos, 7));
                fields.Add(new(name, value));
            }
            else if ((first & 0xC0) == 0x40) // literal with incremental indexing (6.2.1)
            {
                var field = ReadLiteral(block, ref pos, 6);
                fields.Add(new(field.Name, field.Value));
                Insert(field);
            }
            else if ((first & 0xE0) == 0x20) // dynamic table size update (6.3)
            {
                int size = ReadInteger(block, ref pos, 5);
                if (size > _maxTableSize)
                {
                    throw new HpackException($"a table size update to {size} exceeds the {_maxTableSize} allowed");
                }

                _tableLimit = size;
                Evict();
            }
            else // literal without indexing (6.2.2) or never indexed (6.2.3): a 4-bit prefix either way
            {
                var (name, value) = ReadLiteral(block, ref pos, 4);
                fields.Add(new(name, value));
            }
        }
    }

    private (string Name, string Value) ReadLiteral(ReadOnlySpan<byte> block, ref int pos, int prefixBits)
    {
        int index = ReadInteger(block, ref pos, prefixBits);
        string name = index == 0 ? ReadString(block, ref pos) : Lookup(index).Name;
        return (name, ReadString(block, ref pos));
    }

    private (string Name, string Value) Lookup(int index)
    {
        if (index >= 1 && index <= Hpack.StaticTable.Length)
        {
            return Hpack.StaticTable[index - 1];
        }

        int dynamicIndex = index - Hpack.StaticTable.Length - 1;
        if (index == 0 || dynamicIndex >= _dynamic.Count)
        {
            throw new HpackException($"header table index {index} is not in the table");
        }

        return _dynamic.ElementAt(dynamicIndex);
    }

    private void Insert((string Name, string Value) field)
    {
        int size = field.Name.Length + field.Value.Length + 32; // 4.1
        if (size > _tableLimit)
        {
            _dynamic.Clear(); // 4.4: an entry larger than the table empties it
            _tableSize = 0;
            return;
        }

        _dynamic.AddFirst(field);
        _tableSize += size;
        Evict();
    }

    private void Evict()
    {
        while (_tableSize > _tableLimit && _dynamic.Last is { } oldest)
        {
            _tableSize -= oldest.Value.Name.Length + oldest.Value.Value.Length + 32;
            _dynamic.RemoveLast();
        }
    }

    private static string ReadString(ReadOnlySpan<byte> block, ref int pos)
    {
        if (pos >= block.Length)
        {
            throw new HpackException("a header block ends before a string");
        }

        bool huffman = (block[pos] & 0x80) != 0;
        int length = ReadInteger(block, ref pos, 7);
        if (length > block.Length - pos)
        {
            throw new HpackException($"a {length}-byte string runs past the end of its header block");
        }

        if (huffman)
        {
            throw new HpackException("the target sent a Huffman-coded header, which this client does not decode");
        }

        string value = Encoding.Latin1.GetString(block.Slice(pos, length));
        pos += length;
        return value;
    }

    internal static int ReadInteger(ReadOnlySpan<byte> block, ref int pos, int prefixBits)
    {
        int max = (1 << prefixBits) - 1;
        int value = block[pos++] & max;
        if (value < max)
        {
            return value;
        }

        for (int shift = 0; ; shift += 7)
        {
            if (pos >= block.Length || shift > 21)
            {
                throw new HpackException("a header block holds a truncated or oversized integer");
            }

            byte next = block[pos++];
            value += (next & 0x7F) << shift;
            if ((next & 0x80) == 0)
            {
                return value;
            }
        }
    }
}

/// <summary>A header block this client cannot read: a COMPRESSION_ERROR for the connection.</summary>
internal sealed class HpackException(string message) : Exception(message);
