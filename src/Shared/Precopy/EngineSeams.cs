using Migration.Shared.Devices;
using Migration.Shared.Diagnostics;
using Migration.Shared.Machine;
using Migration.Shared.Transport;

namespace Migration.Shared.Precopy;

/// <summary>
/// Where tests reach into the engine: the transport, the participants, the convergence policy, setup's order and
/// background work. <see cref="Production"/> is what users run; the race fuzzer's mutants and a few end-to-end tests
/// swap one seam each. Nothing in the engine asks which it got.
/// </summary>
internal sealed record EngineSeams
{
    public static readonly EngineSeams Production = new();

    /// <summary>Replaces the gRPC transport (the fuzzer's in-memory target).</summary>
    public Func<VirtualMachine, TransferCounters, IMigrationTransport>? Transport { get; init; }

    /// <summary>Wraps each participant the VM offers (R2 and R9 drop notifications).</summary>
    public Func<IPrecopyParticipant, IPrecopyParticipant> Participant { get; init; } = p => p;

    /// <summary>Wraps the convergence policy (the fuzzer runs a drawn number of rounds; tests hold precopy).</summary>
    public Func<IConvergencePolicy, IConvergencePolicy> Convergence { get; init; } = p => p;

    /// <summary>
    /// Runs after every page is marked to send and before dirty logging is on (R3 opens its window here).
    /// </summary>
    public Action<PrecopySetup, IReadOnlyList<IPrecopyParticipant>>? BeforeLoggingEnabled { get; init; }

    /// <summary>The live instruments the attempt feeds (a test listens to a meter of its own).</summary>
    public SourceMetrics Metrics { get; init; } = SourceMetrics.Shared;

    /// <summary>Runs the switchover's hashing beside the final send (inline under the fuzzer's scheduler).</summary>
    public IBackgroundWork Background { get; init; } = ThreadPoolWork.Instance;
}

/// <summary>Work the engine runs beside its own: the thread pool in production.</summary>
internal interface IBackgroundWork
{
    Task<T> Run<T>(Func<T> work, CancellationToken ct);
}

internal sealed class ThreadPoolWork : IBackgroundWork
{
    public static readonly ThreadPoolWork Instance = new();

    public Task<T> Run<T>(Func<T> work, CancellationToken ct) => Task.Run(work, ct);
}
