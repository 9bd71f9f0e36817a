using Microsoft.Extensions.Logging;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;

namespace Migration.Shared.Tests.Precopy;

/// <summary>
/// A bug is reported as one: an exception no layer expected ends the attempt as an internal error with its stack in
/// the log, never as a lost connection (which would send the operator to the network). Before the handover the guest
/// resumes as on any failure; during it the guest stays paused, since the target may already run it.
/// </summary>
public sealed class InternalErrorTests
{
    private static async Task<(MigrationReport Report, VirtualMachine Vm, RecordingLogger Log)> MigrateAsync(
        Action<FakeTransport> configure)
    {
        var vm = VirtualMachine.Boot(new GuestConfig
        {
            RamBytes = 16L << 20,
            Vcpus = 1,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Idle },
        });
        vm.Start();
        var seams = EngineSeams.Production with
        {
            Transport = (source, counters) =>
            {
                var transport = new FakeTransport(source, counters);
                configure(transport);
                return transport;
            },
        };
        var options = MigrationOptions.Defaults with { Target = new Uri("http://in-process") };
        var log = new RecordingLogger();
        var report = await new PrecopyEngine(vm, options, seams, logger: log).MigrateAsync()
            .WaitAsync(TimeSpan.FromSeconds(60));
        return (report, vm, log);
    }

    [Fact]
    public async Task ABugBeforeTheHandover_FailsAsAnInternalError_WithItsStackLogged_AndTheGuestRunsOn()
    {
        var (report, vm, log) = await MigrateAsync(transport =>
            transport.OnOpenChannel = () => throw new InvalidOperationException("a bug in the test's transport"));
        using var _ = vm;

        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.StartsWith("internal error during setup: InvalidOperationException: a bug in the test's transport",
            report.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("connection", report.Error, StringComparison.OrdinalIgnoreCase);
        var logged = Assert.Single(log.Entries, e => e.Level == LogLevel.Error);
        Assert.Contains(nameof(FakeTransport.OpenChannel), logged.Exception?.StackTrace, StringComparison.Ordinal);
        Assert.Contains(log.Entries, e => e.Message.Contains("(Internal)", StringComparison.Ordinal));
        Assert.Equal(VmRunState.Running, vm.State);
    }

    [Fact]
    public async Task ABugDuringTheHandover_LeavesTheOutcomeUnknown_AndTheGuestPaused()
    {
        var (report, vm, log) = await MigrateAsync(transport =>
            transport.OnComplete = _ => throw new InvalidOperationException("a bug while answering Complete"));
        using var _ = vm;

        Assert.Equal(MigrationStatus.Unknown, report.Status);
        Assert.Contains("internal error during the handover: InvalidOperationException", report.Error,
            StringComparison.Ordinal);
        Assert.NotNull(Assert.Single(log.Entries, e => e.Level == LogLevel.Error).Exception?.StackTrace);
        Assert.Equal(VmRunState.Paused, vm.State);
    }

    /// <summary>Every log entry, with its exception.</summary>
    private sealed class RecordingLogger : ILogger
    {
        private readonly Lock _lock = new();
        private readonly List<(LogLevel Level, string Message, Exception? Exception)> _entries = [];

        public IReadOnlyList<(LogLevel Level, string Message, Exception? Exception)> Entries
        {
            get
            {
                lock (_lock)
                {
                    return [.. _entries];
                }
            }
        }

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception,
            Func<TState, Exception?, string> formatter)
        {
            ArgumentNullException.ThrowIfNull(formatter);
            lock (_lock)
            {
                _entries.Add((logLevel, formatter(state, exception), exception));
            }
        }
    }
}
