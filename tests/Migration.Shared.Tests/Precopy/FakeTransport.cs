using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;
using Migration.Shared.Transport;

namespace Migration.Shared.Tests.Precopy;

/// <summary>
/// A target in the test process: channels copy pages out of source RAM at once, and Complete answers as configured.
/// Enough to run the engine's phases without a network.
/// </summary>
internal sealed class FakeTransport(VirtualMachine source, TransferCounters counters, bool resumeFirst = false)
    : IMigrationTransport
{
    public Func<CompleteRequest, CompleteReply> OnComplete { get; set; } =
        _ => new CompleteReply { Verified = true, Resumed = true, GuestSelfCheck = "ok" };

    public List<string> Calls { get; } = [];

    /// <summary>What Begin's reply lists: "resume-first" when asked, so the engine runs that switchover.</summary>
    public List<string> Features { get; } = resumeFirst ? [WireNames.ResumeFirstFeature] : [];

    /// <summary>What Status answers (the handover's confirm step asks when Complete throws).</summary>
    public Func<StatusReply> OnStatus { get; set; } = () => new StatusReply { InstanceId = "fake" };

    /// <summary>
    /// Called once Begin has been taken (the target holds the migration) and before its reply leaves: a test can hold
    /// the reply back there. The reply is lost, as a cancelled gRPC call loses it, when the engine's token is
    /// cancelled first.
    /// </summary>
    public Func<Task>? BeforeBeginReply { get; set; }

    /// <summary>The key Begin handed out once its reply reached the engine (null before).</summary>
    public string? KeyDelivered { get; private set; }

    public async Task<BeginReply> BeginAsync(BeginRequest request, CancellationToken ct)
    {
        Calls.Add("begin");
        if (BeforeBeginReply is { } hold)
        {
            await hold().WaitAsync(ct).ConfigureAwait(false);
        }

        var reply = new BeginReply { InstanceId = "fake", MigrationKey = "key" };
        reply.Features.AddRange(Features);
        KeyDelivered = reply.MigrationKey;
        return reply;
    }

    public Task<StatusReply> StatusAsync(string migrationId, TimeSpan timeout, CancellationToken ct)
    {
        Calls.Add("status");
        return Task.FromResult(OnStatus());
    }

    /// <summary>Runs as each channel opens: a test can make it throw, as a bug in a transport would.</summary>
    public Action? OnOpenChannel { get; set; }

    public IPageSink OpenChannel(string migrationId, CancellationToken streamToken)
    {
        OnOpenChannel?.Invoke();
        return new Sink(source, counters, this);
    }

    /// <summary>Runs as a channel takes a list of pages to send.</summary>
    public Action? OnPages { get; set; }

    public Task<CompleteReply> CompleteAsync(CompleteRequest request, TimeSpan timeout, CancellationToken ct)
    {
        Calls.Add("complete");
        return Task.FromResult(OnComplete(request));
    }

    /// <summary>What Confirm answers (reached only when <see cref="OnComplete"/> answers provisional).</summary>
    public Func<ConfirmRequest, CompleteReply> OnConfirm { get; set; } =
        _ => new CompleteReply { Verified = true, Resumed = true, GuestSelfCheck = "ok" };

    public Task<CompleteReply> ConfirmAsync(ConfirmRequest request, TimeSpan timeout, CancellationToken ct)
    {
        Calls.Add("confirm");
        return Task.FromResult(OnConfirm(request));
    }

    /// <summary>What a rehearsal Complete reports as its round trip (the target's rebuild and resume included).</summary>
    public TimeSpan RehearsalRoundTrip { get; set; }

    /// <summary>
    /// Runs before a rehearsal Complete answers: a test can hold the answer back, or make the rehearsal fail.
    /// </summary>
    public Func<Task>? BeforeRehearsalReply { get; set; }

    public async Task<TimeSpan> RehearseCompleteAsync(CompleteRequest request, CancellationToken ct)
    {
        lock (Calls)
        {
            Calls.Add("rehearse"); // beside round 0 the engine's rehearsal runs on a thread of its own
        }

        if (BeforeRehearsalReply is { } hold)
        {
            await hold().WaitAsync(ct).ConfigureAwait(false);
        }

        return RehearsalRoundTrip;
    }

    public Task<CancelReply?> CancelAsync(string migrationId, string reason)
    {
        Calls.Add((KeyDelivered is null ? "cancel without the key: " : "cancel: ") + reason);
        var reply = new CancelReply { Cancelled = true, Outcome = MigrationOutcome.Discarded };
        return Task.FromResult<CancelReply?>(reply);
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private sealed class Sink(VirtualMachine source, TransferCounters counters, FakeTransport transport) : IPageSink
    {
        public ValueTask EnqueueAsync(PageWorkItem item, CancellationToken ct)
        {
            transport.OnPages?.Invoke();
            var copy = new byte[PageGeometry.PageSize];
            for (int i = 0; i < item.Count; i++)
            {
                source.Ram.Page(item.Pfns[i]).CopyTo(copy);
            }

            counters.Add(item.Count * (long)PageGeometry.PageSize, 0, item.Count, 0);
            System.Buffers.ArrayPool<long>.Shared.Return(item.Pfns);
            return ValueTask.CompletedTask;
        }

        public Task BarrierAsync(CancellationToken ct) => Task.CompletedTask;

        public Task CompleteAsync(CancellationToken ct) => Task.CompletedTask;

        public Task<TimeSpan> RehearseCloseAsync(CancellationToken ct) => Task.FromResult(TimeSpan.Zero);

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
