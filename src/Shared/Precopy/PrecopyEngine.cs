using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.Shared.Machine;
using Migration.Shared.Reporting;

namespace Migration.Shared.Precopy;

/// <summary>
/// QEMU-shaped precopy: enable dirty logging, send everything once (round 0), then sync and resend what was dirtied
/// until the expected downtime fits the limit; then pause the guest, sync a last time, send the rest with vCPU state
/// and digests, and let the target verify and resume. Each call to <see cref="MigrateAsync"/> is one
/// <see cref="MigrationAttempt"/>, whose phases have a file each.
/// </summary>
/// <remarks>
/// The engine knows no device by name: the VM's devices join as precopy participants (<c>IPrecopyParticipant</c>).
/// On success the source guest stays paused for good (the caller shuts it down); on failure it runs on.
/// </remarks>
public sealed class PrecopyEngine
{
    private readonly VirtualMachine _vm;
    private readonly MigrationOptions _options;
    private readonly EngineSeams _seams;
    private readonly TimeProvider _time;
    private readonly IProgress<RoundProgress>? _progress;
    private readonly ILogger _log;

    public PrecopyEngine(VirtualMachine vm, MigrationOptions options, IProgress<RoundProgress>? progress = null,
        TimeProvider? time = null, ILogger? logger = null)
        : this(vm, options, EngineSeams.Production, progress, time, logger)
    {
    }

    internal PrecopyEngine(VirtualMachine vm, MigrationOptions options, EngineSeams seams,
        IProgress<RoundProgress>? progress = null, TimeProvider? time = null, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(vm);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(seams);
        options.Validate();
        options.ValidateFor(vm.Config);
        _vm = vm;
        _options = options;
        _seams = seams;
        _progress = progress;
        _time = time ?? TimeProvider.System;
        _log = logger ?? NullLogger.Instance;
        Parameters = new LiveParameters(options.Parameters);
    }

    /// <summary>
    /// The settings the user may change while the migration runs (the management API's SetMigrationParameters);
    /// each change applies from the next round.
    /// </summary>
    public LiveParameters Parameters { get; }

    /// <summary>Migrates the VM; returns the report whatever the outcome (its status says which).</summary>
    public async Task<MigrationReport> MigrateAsync(CancellationToken ct = default)
    {
        await using var attempt = new MigrationAttempt(_vm, _options, Parameters, _seams, _time, _progress, _log);
        return await attempt.RunAsync(ct).ConfigureAwait(false);
    }
}
