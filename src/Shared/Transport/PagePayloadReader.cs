using System.Buffers;

namespace Migration.Shared.Transport;

/// <summary>
/// Walks a batch's concatenated payload page by page. A page that lies in one receive buffer is handed out in place;
/// one that straddles two buffers (one in sixteen with 64 KiB buffers and 4 KiB pages) is gathered into a scratch page.
/// </summary>
public ref struct PagePayloadReader
{
    private SequenceReader<byte> _reader;
    private readonly Span<byte> _scratch;

    /// <param name="payload">The payload, <see cref="ReceivedBatch.Payload"/>.</param>
    /// <param name="scratch">At least <see cref="PageCodec.MaxEncodedLength"/> bytes for a page split across buffers.</param>
    public PagePayloadReader(ReadOnlySequence<byte> payload, Span<byte> scratch)
    {
        if (scratch.Length < PageCodec.MaxEncodedLength)
        {
            throw new ArgumentException($"the scratch page needs {PageCodec.MaxEncodedLength} bytes", nameof(scratch));
        }

        _reader = new SequenceReader<byte>(payload);
        _scratch = scratch;
    }

    /// <summary>Passes over the next <paramref name="length"/> bytes without reading them.</summary>
    public void Skip(int length) => _reader.Advance(length);

    /// <summary>The next <paramref name="length"/> bytes (the caller checked the lengths add up to the payload).</summary>
    public ReadOnlySpan<byte> Next(int length)
    {
        var unread = _reader.UnreadSpan;
        if (unread.Length >= length)
        {
            _reader.Advance(length);
            return unread[..length];
        }

        var gathered = _scratch[..length];
        if (!_reader.TryCopyTo(gathered))
        {
            throw new InvalidOperationException($"the payload ends before a {length}-byte page");
        }

        _reader.Advance(length);
        return gathered;
    }
}
