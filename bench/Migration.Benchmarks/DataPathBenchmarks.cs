using System.Buffers;
using BenchmarkDotNet.Attributes;
using Migration.Shared.Guest;
using Migration.TestSupport;
using Migration.Shared.Transport;

namespace Migration.Benchmarks;

/// <summary>
/// The per-page work of the data path on a 256-page batch (what one message carries): zero-page detection, encoding
/// from RAM into the staging buffer (raw, or LZ4 on compressible content), writing the PageBatch message, and on the
/// target parsing it out of a two-segment receive buffer and decoding it into RAM.
/// </summary>
[MemoryDiagnoser]
public class DataPathBenchmarks
{
    private const int BatchPages = 256;
    private GuestRam _source = null!;
    private GuestRam _target = null!;
    private byte[] _staging = [];
    private byte[] _message = [];
    private long[] _pfns = [];
    private byte[] _kinds = [];
    private int[] _lengths = [];
    private int _payloadLength;
    private PageBatchLayout _layout;
    private int _messageLength;
    private ReadOnlySequence<byte> _received;
    private readonly ReceivedBatch _batch = new();

    /// <summary>zero: untouched pages; random: incompressible data; text: repetitive data LZ4 shrinks.</summary>
    [Params("zero", "random", "text")]
    public string Content { get; set; } = "random";

    [Params(false, true)]
    public bool Lz4 { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _source = GuestRam.Allocate(4L << 20);
        _target = GuestRam.Allocate(4L << 20);
        var rng = new Random(7);
        for (long p = 0; p < BatchPages; p++)
        {
            var page = _source.Page(p);
            switch (Content)
            {
                case "random": rng.NextBytes(page); break;
                case "text":
                    for (int i = 0; i < page.Length; i++)
                    {
                        page[i] = (byte)"migration of a running guest "[(i + (int)p) % 29];
                    }

                    break;
            }
        }

        _pfns = [.. Enumerable.Range(0, BatchPages).Select(i => (long)i)];
        _kinds = new byte[BatchPages];
        _lengths = new int[BatchPages];
        _staging = new byte[BatchPages * PageCodec.MaxEncodedLength];
        EncodeBatch();
        _layout = PageBatchWire.Measure(1, _pfns, _kinds, _lengths, _payloadLength);
        _message = new byte[_layout.MessageLength];
        _messageLength = WriteMessage();
        // Kestrel hands a message over as a sequence of buffer segments; split it in two to take the slow path.
        _received = SegmentedSequence.Split(_message.AsMemory(0, _messageLength), _messageLength / 2);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _source.Dispose();
        _target.Dispose();
    }

    [Benchmark]
    public int ZeroDetection()
    {
        int zero = 0;
        for (long p = 0; p < BatchPages; p++)
        {
            zero += PageCodec.IsZero(_source.Page(p)) ? 1 : 0;
        }

        return zero;
    }

    [Benchmark]
    public int EncodeBatch()
    {
        int offset = 0;
        for (int i = 0; i < BatchPages; i++)
        {
            var (kind, length) = PageCodec.Encode(_source.Page(i), _staging.AsSpan(offset), Lz4);
            _kinds[i] = (byte)kind;
            _lengths[i] = length;
            offset += length;
        }

        _payloadLength = offset;
        return offset;
    }

    [Benchmark]
    public int WriteMessage() =>
        PageBatchWire.Write(_message, _layout, 1, _pfns, _kinds, _lengths, _staging.AsSpan(0, _payloadLength));

    [Benchmark]
    public int ParseAndDecode()
    {
        if (PageBatchWire.Read(_received, _batch) is { } error)
        {
            throw new InvalidDataException(error.Detail);
        }

        // As the target decodes: page by page straight out of the receive buffers, gathering a page split across two.
        Span<byte> scratch = stackalloc byte[PageCodec.MaxEncodedLength];
        var payload = new PagePayloadReader(_batch.Payload, scratch);
        int bytes = 0;
        for (int i = 0; i < _batch.Count; i++)
        {
            int length = (int)_batch.Lengths[i];
            var kind = (PageEncodingKind)_batch.Kinds[i];
            _ = PageCodec.Decode(kind, payload.Next(length), _target.Page((long)_batch.Pfns[i]));
            bytes += length;
        }

        return bytes;
    }
}
