namespace Migration.RaceFuzzer.Tests.Harness;

/// <summary>The guest and device configurations the fuzzer explores.</summary>
public enum FuzzProfile
{
    /// <summary>
    /// Eager dirty log, the driver may reuse a hinted block before the device used it (Linux's historical default).
    /// </summary>
    EagerNoAck,

    EagerWaitOnAck,

    /// <summary>Manual dirty log (KVM_CLEAR_DIRTY_LOG) with wait-on-ack: the configuration the engine allows.</summary>
    ManualWaitOnAck,

    /// <summary>Manual dirty log without wait-on-ack: refused unless --allow-unsafe (race R5).</summary>
    ManualNoAck,

    /// <summary>
    /// Eager log and wait-on-ack hinting, plus the balloon's inflate/deflate: a drawn encoding, MUST_TELL_HOST or not,
    /// events or not, a host that moves the target during the migration and a device that serves its queues in any
    /// order (races R13-R17).
    /// </summary>
    Balloon,

    /// <summary>
    /// Eager log and wait-on-ack hinting, plus free page reporting at a drawn order and pace, with the poison value
    /// drawn from off, zero and 0xAA: a warm-up reports the guest and lets it take reported blocks back before the
    /// migration, and reports go on during it, served by a device thread that is sometimes descheduled (R20-R22).
    /// </summary>
    Reporting,

    /// <summary>
    /// Eager log and wait-on-ack hinting with the vCPUs slowed as convergence slows them: every vCPU throttled by a
    /// drawn share, or each under a drawn dirty-rate ceiling (rule C1's races).
    /// </summary>
    Throttled,

    /// <summary>
    /// Eager log and wait-on-ack hinting, with delta pages: each channel encodes through the production encoder and a
    /// shared cache of a drawn size (16 KiB to 4 MiB of a 16 MiB guest, so entries are evicted), a host actor resizes
    /// the cache now and then while channels encode, and a channel's barrier completes once it has encoded its queue,
    /// with its last batch possibly still undelivered, as a real channel's does (R25, R26).
    /// </summary>
    Deltas,
}
