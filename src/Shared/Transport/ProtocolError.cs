namespace Migration.Shared.Transport;

/// <summary>What kind of thing is wrong with a message from the peer; tests and the receiver branch on this.</summary>
public enum ProtocolErrorKind
{
    /// <summary>The message ends inside a field.</summary>
    Truncated,

    /// <summary>A length prefix is longer than what follows, or a field's value is out of its range.</summary>
    BadLength,

    /// <summary>A field that may appear once appears twice.</summary>
    Duplicate,

    /// <summary>More entries than the protocol allows in one message.</summary>
    TooMany,

    /// <summary>A wire type the field cannot have.</summary>
    UnsupportedWireType,

    /// <summary>The parts of the message disagree with each other (counts, lengths, payload).</summary>
    Inconsistent,

    /// <summary>A page number outside guest RAM.</summary>
    OutOfRange,

    /// <summary>A page payload that does not decode (unknown encoding, corrupt LZ4, wrong size).</summary>
    BadPage,
}

/// <summary>A malformed message, with its kind and a detail naming the field or page.</summary>
public readonly record struct ProtocolError(ProtocolErrorKind Kind, string Detail)
{
    public override string ToString() => Detail;
}
