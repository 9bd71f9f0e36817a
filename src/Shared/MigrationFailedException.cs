namespace Migration.Shared;

/// <summary>Why a migration failed, in categories a caller can act on.</summary>
public enum FailureKind
{
    /// <summary>The target could not be reached, or the connection to it was lost.</summary>
    ConnectionLost,

    /// <summary>The target refused a request (bad geometry, busy, a protocol error it found).</summary>
    TargetRefused,

    /// <summary>The guest dirties memory faster than the link can converge within the limits.</summary>
    NotConverging,

    /// <summary>The target rebuilt the guest and it did not verify (digests or self-check).</summary>
    VerificationFailed,

    /// <summary>A deadline passed (the target did not answer in time).</summary>
    Timeout,

    /// <summary>The user cancelled.</summary>
    Cancelled,

    /// <summary>
    /// A bug in this program: an exception no layer expected. It is not called a lost connection, which would send the
    /// operator to the network; the log has its stack.
    /// </summary>
    Internal,
}

/// <summary>
/// The migration could not complete, for a reason with a kind. The transport raises it for whatever the target and the
/// connection do (at its edge, <c>TransportFailures</c>), the engine for what it decides itself (not converging, not
/// verified). Declared at the root of Shared, below both, so the engine sees no gRPC type and the transport needs
/// nothing of the engine.
/// </summary>
public sealed class MigrationFailedException : Exception
{
    public MigrationFailedException(FailureKind kind, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Kind = kind;
    }

    public FailureKind Kind { get; }
}
