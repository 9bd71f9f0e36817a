using System.Buffers;
using Migration.Shared.Transport;

namespace Migration.Target.Tests.Receiving;

/// <summary>Page batches as the target receives them, written and parsed by the real wire code.</summary>
internal static class TestBatches
{
    public static ReceivedBatch Build(uint round, params (long Pfn, PageEncodingKind Kind, byte[] Payload)[] pages)
    {
        long[] pfns = [.. pages.Select(p => p.Pfn)];
        byte[] kinds = [.. pages.Select(p => (byte)p.Kind)];
        int[] lengths = [.. pages.Select(p => p.Payload.Length)];
        byte[] payload = [.. pages.SelectMany(p => p.Payload)];
        var layout = PageBatchWire.Measure(round, pfns, kinds, lengths, payload.Length);
        var message = new byte[layout.MessageLength];
        PageBatchWire.Write(message, layout, round, pfns, kinds, lengths, payload);
        var batch = new ReceivedBatch();
        Assert.Null(PageBatchWire.Read(new ReadOnlySequence<byte>(message), batch));
        return batch;
    }
}
