using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Migration.Shared.Transport;

/// <summary>
/// XBZRLE, QEMU's delta encoding of a page against an older copy of it ("XOR-based zero run length encoding"): the
/// page is cut into runs where the XOR of old and new is zero (bytes unchanged) and runs where it is not, and encoded
/// as alternating (zero-run length, literal-run length, the literal run's new bytes), lengths in ULEB128 of at most two
/// bytes. The first zero run may be empty, every later run is not, and a trailing zero run is left out, so an unchanged
/// page encodes to nothing. The format is QEMU's (<c>migration/xbzrle.c</c>), so its decoder reads ours.
/// </summary>
/// <remarks>
/// Decoding writes the literal runs' bytes over the page in place (the page must hold the copy the delta was made
/// against); <see cref="Validate"/> checks a whole delta before anything is written, so a bad delta leaves the page
/// as it was. The encoder folds short equal stretches (under <see cref="MinZeroRun"/> bytes) into the literal run
/// around them: ending a literal run there would cost two or three bytes of lengths to save fewer bytes of literal,
/// and a literal byte that equals the old one decodes to the same page.
/// </remarks>
public static class Xbzrle
{
    /// <summary>A run length takes at most this many ULEB128 bytes (14 bits, as QEMU's decoder reads them).</summary>
    public const int MaxLengthBytes = 2;

    /// <summary>Equal stretches shorter than this inside a changed region stay in its literal run.</summary>
    public const int MinZeroRun = 4;

    private const int MaxRunLength = 0x3fff;
    private const ulong Ones = 0x0101010101010101UL;
    private const ulong Highs = 0x8080808080808080UL;

    /// <summary>
    /// Encodes <paramref name="current"/> against <paramref name="old"/> (the same length, at most 16383 bytes) into
    /// <paramref name="output"/>; returns the bytes written, 0 when the two are equal, or -1 when the encoding does
    /// not fit <paramref name="output"/> (an overflow: the caller sends the page whole). Encoding stops as soon as it
    /// cannot fit, so a page that changed everywhere costs little more than the output's length.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // first used in a round, not at start-up
    public static int Encode(ReadOnlySpan<byte> old, ReadOnlySpan<byte> current, Span<byte> output)
    {
        if (old.Length != current.Length || current.Length > MaxRunLength)
        {
            throw new ArgumentException($"pages of {old.Length} and {current.Length} bytes cannot be encoded");
        }

        int n = current.Length;
        int i = 0;
        int d = 0;
        while (true)
        {
            int zero = old[i..].CommonPrefixLength(current[i..]);
            i += zero;
            if (i == n)
            {
                return d; // the trailing zero run is left out
            }

            int end = LiteralEnd(old, current, i + 1);
            int literal = end - i;
            int need = LengthBytes(zero) + LengthBytes(literal) + literal;
            if (need > output.Length - d)
            {
                return -1;
            }

            d += WriteLength(output[d..], zero);
            d += WriteLength(output[d..], literal);
            current[i..end].CopyTo(output[d..]);
            d += literal;
            i = end;
        }
    }

    /// <summary>
    /// Checks that <paramref name="runs"/> is a well-formed delta of one page of <paramref name="pageSize"/> bytes:
    /// every length complete and at most two bytes, no empty run but the first zero run, no run past the page's end,
    /// every literal run's bytes present, nothing after the runs reached the page's end. Null when it is; else why not.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // first used in a round, not at start-up
    public static string? Validate(ReadOnlySpan<byte> runs, int pageSize)
    {
        int i = 0;
        int d = 0;
        while (i < runs.Length)
        {
            if (d == pageSize)
            {
                return $"{runs.Length - i} byte(s) follow the runs, which already cover the page";
            }

            if (ReadLength(runs, ref i, out int zero) is { } zeroProblem)
            {
                return $"zero run at page offset {d}: {zeroProblem}";
            }

            if (zero == 0 && d > 0)
            {
                return $"an empty zero run at page offset {d} (only the first may be empty)";
            }

            if (zero >= pageSize - d)
            {
                return $"a zero run of {zero} bytes at page offset {d} reaches past the page's last byte " +
                    $"with a literal run still to come (the page has {pageSize} bytes)";
            }

            d += zero;
            if (i == runs.Length)
            {
                return $"the delta ends after a zero run, at page offset {d}, without its literal run (truncated)";
            }

            if (ReadLength(runs, ref i, out int literal) is { } literalProblem)
            {
                return $"literal run at page offset {d}: {literalProblem}";
            }

            if (literal == 0)
            {
                return $"an empty literal run at page offset {d}";
            }

            if (literal > pageSize - d)
            {
                return $"a literal run of {literal} bytes at page offset {d} runs past the page's end " +
                    $"(the page has {pageSize} bytes)";
            }

            if (literal > runs.Length - i)
            {
                return $"a literal run of {literal} bytes at page offset {d} has only {runs.Length - i} " +
                    "(truncated)";
            }

            i += literal;
            d += literal;
        }

        return null;
    }

    /// <summary>
    /// Decodes <paramref name="runs"/> onto <paramref name="page"/>, which holds the copy it was encoded against. A
    /// delta that is not well formed (<see cref="Validate"/>) changes nothing and is returned as the reason.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // first used in a round, not at start-up
    public static string? Apply(ReadOnlySpan<byte> runs, Span<byte> page)
    {
        if (Validate(runs, page.Length) is { } problem)
        {
            return problem;
        }

        int i = 0;
        int d = 0;
        while (i < runs.Length)
        {
            _ = ReadLength(runs, ref i, out int zero);
            _ = ReadLength(runs, ref i, out int literal);
            d += zero;
            runs.Slice(i, literal).CopyTo(page[d..]);
            i += literal;
            d += literal;
        }

        return null;
    }

    /// <summary>
    /// The end of the literal run that holds byte <paramref name="j"/>-1: the first index from which at least
    /// <see cref="MinZeroRun"/> bytes are unchanged, or from which every byte to the page's end is; else the end.
    /// Eight changed bytes at a time are skipped word-wise (no zero byte in their XOR).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // first used in a round, not at start-up
    private static int LiteralEnd(ReadOnlySpan<byte> old, ReadOnlySpan<byte> current, int j)
    {
        int n = current.Length;
        while (j < n)
        {
            if (j + sizeof(ulong) <= n)
            {
                ulong x = BinaryPrimitives.ReadUInt64LittleEndian(old[j..])
                    ^ BinaryPrimitives.ReadUInt64LittleEndian(current[j..]);
                if (((x - Ones) & ~x & Highs) == 0)
                {
                    j += sizeof(ulong); // every byte of the word changed
                    continue;
                }
            }

            if (old[j] != current[j])
            {
                j++;
                continue;
            }

            int equal = 1;
            while (equal < MinZeroRun && j + equal < n && old[j + equal] == current[j + equal])
            {
                equal++;
            }

            if (equal >= MinZeroRun || j + equal == n)
            {
                return j;
            }

            j += equal;
        }

        return n;
    }

    private static int LengthBytes(int value) => value < 0x80 ? 1 : 2;

    private static int WriteLength(Span<byte> output, int value)
    {
        if (value < 0x80)
        {
            output[0] = (byte)value;
            return 1;
        }

        output[0] = (byte)(value | 0x80);
        output[1] = (byte)(value >> 7);
        return 2;
    }

    private static string? ReadLength(ReadOnlySpan<byte> runs, ref int i, out int value)
    {
        value = 0;
        if (i >= runs.Length)
        {
            return "its length is missing (truncated)";
        }

        byte first = runs[i];
        if (first < 0x80)
        {
            value = first;
            i++;
            return null;
        }

        if (i + 1 >= runs.Length)
        {
            return "its length is cut off (truncated)";
        }

        byte second = runs[i + 1];
        if (second >= 0x80)
        {
            return $"its length takes more than {MaxLengthBytes} bytes (an overflowing length)";
        }

        value = (first & 0x7f) | (second << 7);
        i += 2;
        return null;
    }
}
