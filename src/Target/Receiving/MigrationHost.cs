using System.Diagnostics;
using System.Text.Json;
using Grpc.Core;
using Migration.Protocol;
using Migration.Shared.Balloon;
using Migration.Shared.Guest;
using Migration.Shared.Reporting;
using Migration.Shared.Verification;

namespace Migration.Target.Receiving;

/// <summary>
/// The target's one-migration-at-a-time state machine: idle -> receiving -> verifying -> resumed (or failed, back to
/// accepting). Only a migration whose digests match and whose guest passes its self-check is resumed; anything else is
/// discarded and the host takes the next migration.
/// </summary>
internal sealed class MigrationHost : IDisposable
{
    private readonly object _lock = new();
    private readonly TargetOptions _options;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly ILogger<MigrationHost> _log;
    private IncomingMigration? _current;
    private GuestRam? _preallocated;
    private VirtualMachine? _resumed;
    private string _state = "idle";
    private string? _lastId;
    private string? _lastError;

    public MigrationHost(TargetOptions options, IHostApplicationLifetime lifetime, ILogger<MigrationHost> log)
    {
        _options = options;
        _lifetime = lifetime;
        _log = log;
        if (options.PreallocBytes is long bytes)
        {
            _preallocated = GuestRam.Allocate(bytes);
            double ms = _preallocated.Populate();
            TargetLog.Preallocated(_log, bytes >> 20, (long)ms);
        }
    }

    public BeginReply Begin(BeginRequest request)
    {
        if (string.IsNullOrWhiteSpace(request.MigrationId))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "migration_id is required"));
        }

        if (request.PageSize != PageGeometry.PageSize)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"page size {request.PageSize} is not supported (only {PageGeometry.PageSize})"));
        }

        GuestConfig config;
        try
        {
            config = JsonSerializer.Deserialize(request.GuestConfigJson, WireJson.Default.GuestConfig)
                ?? throw new ArgumentException("guest_config_json is empty");
            config.Validate();
        }
        catch (Exception ex) when (ex is JsonException or ArgumentException or NotSupportedException)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"guest configuration rejected: {ex.Message}"));
        }

        if ((ulong)config.RamBytes != request.RamBytes || (uint)config.Vcpus != request.Vcpus)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument,
                $"geometry mismatch: request says {request.RamBytes} bytes / {request.Vcpus} vCPUs, configuration {config.RamBytes} / {config.Vcpus}"));
        }

        lock (_lock)
        {
            if (_current is not null || _state is "verifying")
            {
                throw new RpcException(new Status(StatusCode.FailedPrecondition, $"target is busy with migration {_current?.Id ?? _lastId}"));
            }

            if (_resumed is not null)
            {
                throw new RpcException(new Status(StatusCode.FailedPrecondition, $"target already runs the guest of migration {_lastId}"));
            }

            try
            {
                GuestRam? ram = null;
                if (_preallocated is not null && _preallocated.SizeBytes == config.RamBytes)
                {
                    (ram, _preallocated) = (_preallocated, null);
                }

                _current = new IncomingMigration(request.MigrationId, config, ram ?? GuestRam.Allocate(config.RamBytes));
            }
            catch (OutOfMemoryException ex)
            {
                throw new RpcException(new Status(StatusCode.ResourceExhausted, $"cannot host {config.RamBytes} bytes of guest RAM: {ex.Message}"));
            }

            _state = "receiving";
            _lastId = request.MigrationId;
            _lastError = null;
        }

        TargetLog.Receiving(_log, request.MigrationId, config.RamBytes >> 20, config.Vcpus);
        return new BeginReply { MaxMessageBytes = (uint)_options.MaxMessageBytes, Features = { "lz4", "round-tags" } };
    }

    /// <summary>The migration a request names, or a FailedPrecondition status (before begin, after completion, wrong id).</summary>
    public IncomingMigration Require(string? migrationId)
    {
        lock (_lock)
        {
            if (_current is null)
            {
                throw new RpcException(new Status(StatusCode.FailedPrecondition,
                    $"no migration is being received (state {_state}); call Begin first"));
            }

            if (!string.Equals(_current.Id, migrationId, StringComparison.Ordinal))
            {
                throw new RpcException(new Status(StatusCode.FailedPrecondition, $"migration {migrationId} is not the one being received ({_current.Id})"));
            }

            if (_state != "receiving")
            {
                throw new RpcException(new Status(StatusCode.FailedPrecondition, $"migration {migrationId} is {_state}, not receiving"));
            }

            return _current;
        }
    }

    /// <summary>A bad batch poisons the migration: discard it, so no half-written guest can ever resume.</summary>
    public void Fail(IncomingMigration migration, string reason)
    {
        lock (_lock)
        {
            if (!ReferenceEquals(_current, migration))
            {
                return;
            }

            _current = null;
            _state = "failed";
            _lastError = reason;
        }

        migration.Dispose();
        TargetLog.Failed(_log, migration.Id, reason);
        WriteReport(migration.Id, migration.CpuAtStart, "failed", null, reason);
        StopIfOnce();
    }

    public CompleteReply Complete(CompleteRequest request)
    {
        long entered = Stopwatch.GetTimestamp();
        var migration = Require(request.MigrationId);
        lock (_lock)
        {
            _state = "verifying";
        }

        var reply = Verify(migration, request, out var vm);
        lock (_lock)
        {
            _current = null;
            if (vm is not null)
            {
                _resumed = vm;
                _state = "resumed";
            }
            else
            {
                _state = "failed";
                _lastError = reply.Error;
            }
        }

        // The report file is written off the reply path: it is not part of the switchover, and serialising it in a fresh
        // process cost tens of milliseconds of downtime. StopIfOnce waits for it.
        var written = reply.Clone();
        QueueReport(() => WriteReport(migration.Id, migration.CpuAtStart, vm is not null ? "resumed" : "failed", written, written.Error));
        reply.PhasesMs["other"] = Math.Max(0, Stopwatch.GetElapsedTime(entered).TotalMilliseconds - reply.PhasesMs.Values.Sum());
        if (vm is not null)
        {
            _ = RunAfterAsync(migration.Id, migration.CpuAtStart, vm, reply);
        }
        else
        {
            StopIfOnce();
        }

        return reply;
    }

    public CancelReply Cancel(CancelRequest request)
    {
        IncomingMigration? migration;
        lock (_lock)
        {
            migration = _current;
            if (migration is null || !string.Equals(migration.Id, request.MigrationId, StringComparison.Ordinal) || _state != "receiving")
            {
                return new CancelReply { Cancelled = false };
            }
        }

        Fail(migration, $"cancelled by the source: {request.Reason}");
        return new CancelReply { Cancelled = true };
    }

    public StatusReply Status()
    {
        lock (_lock)
        {
            return new StatusReply
            {
                State = _state,
                MigrationId = _current?.Id ?? _lastId ?? string.Empty,
                PagesReceived = (ulong)(_current?.PagesReceived ?? 0),
                BytesReceived = (ulong)(_current?.BytesReceived ?? 0),
                Round = (uint)(_current?.MaxRound ?? 0),
                Error = _lastError ?? string.Empty,
            };
        }
    }

    private CompleteReply Verify(IncomingMigration migration, CompleteRequest request, out VirtualMachine? resumed)
    {
        resumed = null;
        var reply = new CompleteReply();
        if (migration.OpenStreams > 0)
        {
            migration.Dispose();
            reply.Error = $"{migration.OpenStreams} page stream(s) still open at completion";
            return reply;
        }

        var phase = Stopwatch.StartNew();
        VirtualMachine vm;
        try
        {
            var device = request.Device;
            vm = VirtualMachine.Restore(migration.Config, migration.TakeRam(), [.. request.VcpuStates.Select(s => s.ToByteArray())],
                hint: device is null ? null : ((HintStatus)device.HintStatus, device.HintCmdId, device.PoisonVal, device.Features));
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidDataException or EndOfStreamException or Shared.Guest.Kernel.GuestKernelException)
        {
            migration.Dispose();
            reply.Error = $"guest could not be rebuilt: {ex.Message}";
            return reply;
        }

        reply.PhasesMs["restore"] = Lap(phase);
        try
        {
            ulong[] expected = PageDigests.FromBytes(request.PageDigests.Span);
            var free = vm.Kernel.FreePageMap();
            ulong[] actual = _options.FullRehash ? PageDigests.Compute(vm.Ram, free) : migration.Digests(vm.Ram, free);
            var (mismatched, first) = PageDigests.Compare(expected, actual, free);
            reply.PagesCompared = (ulong)Math.Max(expected.LongLength, actual.LongLength);
            reply.MismatchedPages = (ulong)mismatched;
            reply.FirstMismatches.AddRange(first.Select(p => (ulong)p));
            reply.PhasesMs["compare"] = Lap(phase);
            var check = vm.Kernel.SelfCheck();
            reply.GuestSelfCheck = check.ToString();
            reply.PhasesMs["selfCheck"] = Lap(phase);
            TargetLog.Verified(_log, migration.Id, reply.PagesCompared, (long)(reply.PhasesMs["compare"] + reply.PhasesMs["selfCheck"]), mismatched, reply.GuestSelfCheck);

            if (expected.LongLength != (long)request.DigestPages)
            {
                reply.Error = $"digest list has {expected.LongLength} entries, the source announced {request.DigestPages}";
            }
            else if (mismatched != 0)
            {
                reply.Error = $"{mismatched} page(s) differ from the source (first: {string.Join(", ", first)})";
            }
            else if (!check.Ok)
            {
                reply.Error = $"guest self-check failed: {check}";
            }

            if (reply.Error.Length > 0)
            {
                vm.Dispose();
                return reply;
            }

            reply.Verified = true;
            if (_options.DumpRamPath is not null)
            {
                DumpRam(vm.Ram, _options.DumpRamPath);
                reply.PhasesMs["dumpRam"] = Lap(phase);
            }

            vm.Start();
            reply.Resumed = true;
            reply.PhasesMs["resume"] = Lap(phase);
            resumed = vm;
            return reply;
        }
        catch (Exception ex) when (ex is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            vm.Dispose();
            reply.Verified = false;
            reply.Resumed = false;
            reply.Error = $"verification failed: {ex.Message}";
            return reply;
        }
    }

    private static double Lap(Stopwatch phase)
    {
        double ms = phase.Elapsed.TotalMilliseconds;
        phase.Restart();
        return ms;
    }

    private static unsafe void DumpRam(GuestRam ram, string path)
    {
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        const int PagesPerWrite = 256;
        for (long p = 0; p < ram.PageCount; p += PagesPerWrite)
        {
            file.Write(ram.Pages(p, (int)Math.Min(PagesPerWrite, ram.PageCount - p)));
        }
    }

    private async Task RunAfterAsync(string id, double cpuAtStart, VirtualMachine vm, CompleteReply reply)
    {
        if (_options.RunAfterSeconds is not double seconds)
        {
            // Not on the Complete call's thread: stopping waits for the report file, and the reply should not.
            _ = Task.Run(StopIfOnce);
            return;
        }

        await Task.Delay(TimeSpan.FromSeconds(seconds)).ConfigureAwait(false);
        vm.Pause();
        var check = vm.Kernel.SelfCheck();
        string crashes = string.Join("; ", vm.Crashes);
        TargetLog.RanAfter(_log, id, seconds, check.ToString(), crashes);
        Console.WriteLine($"run-after: self-check {(check.Ok && crashes.Length == 0 ? "ok" : "FAILED")}: {check}{(crashes.Length > 0 ? "; " + crashes : string.Empty)}");
        QueueReport(() => WriteReport(id, cpuAtStart, check.Ok && crashes.Length == 0 ? "resumed" : "failed-after-resume", reply, check.Ok ? null : check.ToString(), check.ToString()));
        StopIfOnce();
    }

    private void WriteReport(string id, double cpuAtStart, string status, CompleteReply? reply, string? error, string? runAfterCheck = null)
    {
        if (_options.ReportPath is null)
        {
            return;
        }

        var report = new
        {
            migrationId = id,
            status,
            verified = reply?.Verified ?? false,
            error,
            verification = reply is null ? null : new
            {
                pagesCompared = reply.PagesCompared,
                mismatchedPages = reply.MismatchedPages,
                guestSelfCheck = reply.GuestSelfCheck,
            },
            runAfterSelfCheck = runAfterCheck,
            process = ProcessStats.Capture(cpuAtStart),
        };
        File.WriteAllText(_options.ReportPath, JsonSerializer.Serialize(report, MigrationReport.JsonOptions));
    }

    private void StopIfOnce()
    {
        if (_options.Once)
        {
            Task pending;
            lock (_reportGate)
            {
                pending = _reportWrites;
            }

            pending.Wait(TimeSpan.FromSeconds(30));
            _lifetime.StopApplication();
        }
    }

    private readonly object _reportGate = new();
    private Task _reportWrites = Task.CompletedTask;

    /// <summary>Writes reports in order on the thread pool.</summary>
    private void QueueReport(Action write)
    {
        lock (_reportGate)
        {
            _reportWrites = _reportWrites.ContinueWith(_ => write(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _current?.Dispose();
            _current = null;
            _preallocated?.Dispose();
            _preallocated = null;
            _resumed?.Dispose();
            _resumed = null;
        }
    }
}
