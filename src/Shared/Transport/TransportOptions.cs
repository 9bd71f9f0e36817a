namespace Migration.Shared.Transport;

/// <summary>How pages are encoded on the wire beyond zero-page detection.</summary>
public enum Compression
{
    None,

    /// <summary>LZ4 (K4os), kept only for pages it shrinks by at least an eighth.</summary>
    Lz4,
}

/// <summary>
/// What the transport reads to reach a target and shape its page streams. The engine's options produce it
/// (<c>MigrationOptions.Transport</c>), where each default is set and validated with its reason.
/// </summary>
public sealed record TransportOptions
{
    /// <summary>The target's address; every call and every channel connects here.</summary>
    public required Uri Target { get; init; }

    /// <summary>Credentials and TLS trust for reaching the target.</summary>
    public required TransportSecurity Security { get; init; }

    /// <summary>Deadline of the control calls that carry no deadline of their own (Begin, a rehearsal, progress).</summary>
    public required TimeSpan ControlCallTimeout { get; init; }

    /// <summary>How page payloads are encoded beyond zero-page detection.</summary>
    public required Compression Compression { get; init; }

    /// <summary>Pages per message on a channel.</summary>
    public required int PagesPerBatch { get; init; }

    /// <summary>
    /// Bytes of the delta-page cache (<see cref="DeltaPageCache"/>); 0: no delta pages, and the feature is not offered.
    /// </summary>
    public long DeltaCacheBytes { get; init; }
}
