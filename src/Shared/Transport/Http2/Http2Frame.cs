using System.Buffers.Binary;

namespace Migration.Shared.Transport.Http2;

/// <summary>HTTP/2 frame types (RFC 9113, section 6) that the page stream's client sends or handles.</summary>
internal enum FrameType : byte
{
    Data = 0,
    Headers = 1,
    Priority = 2,
    RstStream = 3,
    Settings = 4,
    PushPromise = 5,
    Ping = 6,
    GoAway = 7,
    WindowUpdate = 8,
    Continuation = 9,
}

/// <summary>Frame flags; the same bit means different things on different frame types.</summary>
[Flags]
internal enum FrameFlags : byte
{
    None = 0,
    EndStream = 0x1,
#pragma warning disable CA1069 // HTTP/2 gives the same bit another meaning on SETTINGS and PING
    Ack = 0x1,
#pragma warning restore CA1069
    EndHeaders = 0x4,
    Padded = 0x8,
    Priority = 0x20,
}

/// <summary>One frame's 9-byte header: payload length, type, flags and stream.</summary>
internal readonly record struct FrameHeader(int Length, FrameType Type, FrameFlags Flags, int StreamId)
{
    public const int Size = 9;

    /// <summary>The largest frame payload every peer accepts, and the most a peer may ask for (RFC 9113, 4.2).</summary>
    public const int MinMaxFrameSize = 16_384;

    public const int MaxMaxFrameSize = (1 << 24) - 1;

    public bool Has(FrameFlags flag) => (Flags & flag) != 0;

    public static FrameHeader Read(ReadOnlySpan<byte> source) => new(
        source[0] << 16 | source[1] << 8 | source[2],
        (FrameType)source[3],
        (FrameFlags)source[4],
        (int)(BinaryPrimitives.ReadUInt32BigEndian(source[5..]) & 0x7FFF_FFFF));

    /// <summary>What a client sends before its first frame (RFC 9113, 3.4).</summary>
    public static ReadOnlySpan<byte> ClientPreface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    /// <summary>
    /// Strips a PADDED frame's pad length and padding, then <paramref name="skip"/> bytes (a HEADERS frame's priority
    /// fields), from <paramref name="payload"/>. Returns what is wrong with the frame, or null.
    /// </summary>
    public static string? Unpad(FrameHeader header, ref ReadOnlySpan<byte> payload, int skip)
    {
        int pad = 0;
        if (header.Has(FrameFlags.Padded))
        {
            if (payload.Length < 1)
            {
                return "a padded frame with no pad length";
            }

            pad = payload[0];
            payload = payload[1..];
        }

        if (skip + pad > payload.Length)
        {
            return "a frame whose padding exceeds it";
        }

        payload = payload[skip..(payload.Length - pad)];
        return null;
    }

    public static void Write(Span<byte> destination, int length, FrameType type, FrameFlags flags, int streamId)
    {
        destination[0] = (byte)(length >> 16);
        destination[1] = (byte)(length >> 8);
        destination[2] = (byte)length;
        destination[3] = (byte)type;
        destination[4] = (byte)flags;
        BinaryPrimitives.WriteUInt32BigEndian(destination[5..], (uint)streamId);
    }
}

/// <summary>SETTINGS parameters (RFC 9113, 6.5.2).</summary>
internal enum SettingId : ushort
{
    HeaderTableSize = 1,
    EnablePush = 2,
    MaxConcurrentStreams = 3,
    InitialWindowSize = 4,
    MaxFrameSize = 5,
    MaxHeaderListSize = 6,

    /// <summary>
    /// Ours, from the unassigned space: value 1 says "this connection carries only page streams", and our target then
    /// serves it without Kestrel's HTTP/2 layer (<c>PageStreamConnectionHandler</c>). RFC 9113 (6.5.2) has peers
    /// ignore settings they do not know, so any other server, an older target too, serves the connection as usual.
    /// </summary>
    PageStreamsOnly = 0xF0A1,
}

/// <summary>Error codes of RST_STREAM and GOAWAY (RFC 9113, 7).</summary>
internal static class Http2ErrorCodes
{
    public const uint NoError = 0;
    public const uint ProtocolError = 1;
    public const uint FlowControlError = 3;
    public const uint FrameSizeError = 6;
    public const uint RefusedStream = 7;
    public const uint Cancel = 8;
    public const uint CompressionError = 9;

    public static string Name(uint code) => code switch
    {
        0 => "NO_ERROR",
        1 => "PROTOCOL_ERROR",
        2 => "INTERNAL_ERROR",
        3 => "FLOW_CONTROL_ERROR",
        4 => "SETTINGS_TIMEOUT",
        5 => "STREAM_CLOSED",
        6 => "FRAME_SIZE_ERROR",
        7 => "REFUSED_STREAM",
        8 => "CANCEL",
        9 => "COMPRESSION_ERROR",
        10 => "CONNECT_ERROR",
        11 => "ENHANCE_YOUR_CALM",
        12 => "INADEQUATE_SECURITY",
        13 => "HTTP_1_1_REQUIRED",
        _ => $"error 0x{code:x}",
    };
}
