using Migration.Protocol;
using Migration.Shared.Balloon;
using Migration.Shared.Guest;
using Migration.Shared.Machine;
using Migration.Shared.Transport;
using Migration.Shared.Verification;

namespace Migration.RaceFuzzer.Tests.Harness;

/// <summary>
/// The target side of a fuzzed migration, in memory: channels whose deliveries are actors of the scheduler (so pages
/// from different channels land in any order), target RAM with per-page round tags (race R11), and at completion the
/// invariant check of the README's "Correctness invariant" against the stopped source.
/// </summary>
/// <remarks>
/// <para><c>ordersChannels</c> false is R11's mutant: the per-round barrier completes at once and the target ignores
/// round tags. <c>targetGuest</c> are the seams the rebuilt guest boots with (R12's mutant breaks its driver
/// too).</para>
/// <para>With <c>deltas</c> (the Deltas profile) each channel encodes through the production
/// <see cref="DeltaEncoder"/> and the shared cache (the engine's batches go round-robin here, with no routing by page,
/// so pages move between channels and the rule that a delta stays on its base's channel is exercised), and the target
/// applies a delta only onto the copy of the round it names, as the real one does; any other delta is a violation.
/// The barrier then completes once a channel has read (encoded) everything queued, while its last batch may still be
/// undelivered, as a real channel's barrier completes once its batches are written into the stream, not applied.</para>
/// </remarks>
internal sealed class InMemoryTarget : IMigrationTransport
{
    private readonly VirtualMachine _source;
    private readonly bool _ordersChannels;
    private readonly GuestSeams _targetGuest;
    private readonly TransferCounters _counters;
    private readonly List<Sink> _sinks = [];
    private readonly byte[] _ram;
    private readonly uint[] _roundTag;
    private readonly DeltaPageCache? _deltas;
    private readonly IDeltaDefences _deltaDefences;
    private int _deltasRefused;

    public InMemoryTarget(VirtualMachine source, TransferCounters counters, bool ordersChannels, GuestSeams targetGuest,
        DeltaPageCache? deltas = null, IDeltaDefences? deltaDefences = null)
    {
        _source = source;
        _ordersChannels = ordersChannels;
        _targetGuest = targetGuest;
        _counters = counters;
        _ram = new byte[source.Ram.SizeBytes];
        _roundTag = new uint[source.Ram.PageCount];
        _deltas = deltas;
        _deltaDefences = deltaDefences ?? StandardDeltaDefences.Instance;
        if (deltas is not null)
        {
            counters.DeltaCache = deltas;
        }
    }

    public DeltaPageCache? DeltaCache => _deltas;

    public IReadOnlyList<Sink> Sinks => _sinks;

    /// <summary>What went wrong, empty when the target holds exactly the stopped source's guest.</summary>
    public List<string> Violations { get; } = [];

    /// <summary>Called for every page the engine queues on a channel (the R6 bookkeeping watches this).</summary>
    public Action<long>? PageQueued { get; set; }

    /// <summary>
    /// Called for every page as a channel reads it from source RAM (the R6 bookkeeping watches this).
    /// </summary>
    public Action<long>? PageRead { get; set; }

    public bool Completed { get; private set; }

    public Task<BeginReply> BeginAsync(BeginRequest request, CancellationToken ct) =>
        Task.FromResult(new BeginReply { InstanceId = "in-memory" });

    public IPageSink OpenChannel(string migrationId, CancellationToken streamToken)
    {
        var sink = new Sink(this, _deltas is null ? null : new DeltaEncoder(_deltas, _sinks.Count, _deltaDefences));
        _sinks.Add(sink);
        return sink;
    }

    public Task<StatusReply> StatusAsync(string migrationId, TimeSpan timeout, CancellationToken ct) =>
        throw new NotSupportedException("the in-memory target always answers Complete");

    public Task<CompleteReply> CompleteAsync(CompleteRequest request, TimeSpan timeout, CancellationToken ct)
    {
        Completed = true;
        Check(request);
        return Task.FromResult(new CompleteReply
        {
            Verified = Violations.Count == 0,
            Resumed = Violations.Count == 0,
            Error = string.Join("; ", Violations),
        });
    }

    /// <summary>Never reached: Complete's reply here is always definite (the check reads the source's RAM itself).</summary>
    public Task<CompleteReply> ConfirmAsync(ConfirmRequest request, TimeSpan timeout, CancellationToken ct) =>
        throw new NotSupportedException("the in-memory target answers Complete definitely");

    public Task<TimeSpan> RehearseCompleteAsync(CompleteRequest request, CancellationToken ct) =>
        Task.FromResult(TimeSpan.Zero);

    public Task<CancelReply?> CancelAsync(string migrationId, string reason) =>
        Task.FromResult<CancelReply?>(new CancelReply { Cancelled = true, Outcome = MigrationOutcome.Discarded });

    public ValueTask DisposeAsync()
    {
        _deltas?.Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// The stopped source guest passes its own self-check (every stamped page intact); every page it does not
    /// consider free (the balloon's pages count as free) must be byte-identical on the target; then the
    /// target guest is rebuilt, its balloon driver gives the held blocks back (DONE), and its self-check must pass
    /// (free pages poisoned when poisoning is on: race R12).
    /// </summary>
    private void Check(CompleteRequest request)
    {
        if (_deltasRefused > 1)
        {
            Violations.Add($"{_deltasRefused} deltas in all named a copy the target did not hold");
        }

        // The stopped source guest itself: a discard of a page the guest owns (a balloon race) zeroes its data at the
        // source, and the comparison below would find the same zeroes on both sides.
        var sourceCheck = _source.Kernel.SelfCheck();
        if (!sourceCheck.Ok)
        {
            Violations.Add($"source guest self-check at switchover: {sourceCheck}");
            return;
        }

        var free = _source.Kernel.FreePageMap();
        var lost = new List<long>();
        for (long p = 0; p < _source.Ram.PageCount; p++)
        {
            if (!free.Get(p) && !_source.Ram.Page(p).SequenceEqual(
                _ram.AsSpan((int)(p * PageGeometry.PageSize), PageGeometry.PageSize)))
            {
                lost.Add(p);
            }
        }

        if (lost.Count > 0)
        {
            Violations.Add($"{lost.Count} in-use page(s) differ on the target (lost writes), " +
                $"first: {string.Join(", ", lost.Take(5))}");
            return;
        }

        var ram = GuestRam.Allocate(_source.Ram.SizeBytes);
        _ram.CopyTo(ram.Pages(0, (int)ram.PageCount));
        VirtualMachine target;
        try
        {
            // The real target's path: the sections as the source's machine saved them, read by the devices.
            target = VirtualMachine.Restore(_source.Config, ram, [.. request.VcpuStates.Select(s => s.ToByteArray())],
                null, [.. request.DeviceSections.Select(DeviceSectionWire.FromWire)], _targetGuest);
        }
        catch (InvalidDataException ex)
        {
            ram.Dispose();
            var errors = _source.Balloon.Stats;
            Violations.Add($"the target refused the device state: {ex.Message} (source balloon device: " +
                $"{errors.DeviceErrors} errors{(errors.LastError is null ? string.Empty : ", last: " + errors.LastError)})");
            return;
        }

        using var restored = target;
        if (target.HintDevice.Status != HintStatus.Done)
        {
            Violations.Add($"device state travelled as {target.HintDevice.Status}, expected DONE");
        }

        target.BalloonDriver.ReleaseAll();
        var check = target.Kernel.SelfCheck();
        if (!check.Ok)
        {
            Violations.Add($"target guest self-check after the balloon gave its blocks back: {check}");
        }

        ulong[] digests = PageDigests.FromBytes(request.PageDigests.Span);
        if (digests.LongLength != (long)request.DigestPages)
        {
            Violations.Add("digest count mismatch");
        }
    }

    /// <summary>
    /// One channel: the engine enqueues page lists; the channel's actor reads a list from source RAM (as the real
    /// worker encodes it) in one step and applies it to target RAM in a later step.
    /// </summary>
    internal sealed class Sink(InMemoryTarget owner, DeltaEncoder? delta) : IPageSink
    {
        private readonly Queue<PageWorkItem> _queue = new();
        private (long[] Pfns, byte[] Data, uint Round)? _inFlight;
        private (long[] Pfns, PageEncodingKind[] Kinds, byte[][] Payloads, uint Round)? _inFlightEncoded;

        public bool Idle => _queue.Count == 0 && _inFlight is null && _inFlightEncoded is null;

        public ValueTask EnqueueAsync(PageWorkItem item, CancellationToken ct)
        {
            for (int i = 0; i < item.Count; i++)
            {
                owner.PageQueued?.Invoke(item.Pfns[i]);
            }

            _queue.Enqueue(item);
            return ValueTask.CompletedTask;
        }

        /// <summary>Whether the channel's actor has anything to do.</summary>
        public bool HasWork => !Idle;

        public Task BarrierAsync(CancellationToken ct)
        {
            if (owner._ordersChannels)
            {
                owner._source.Scheduling.WaitUntil(() => delta is null ? Idle : _queue.Count == 0);
            }

            return Task.CompletedTask;
        }

        public Task CompleteAsync(CancellationToken ct)
        {
            owner._source.Scheduling.WaitUntil(() => Idle); // the stream closes once everything is delivered
            return Task.CompletedTask;
        }

        public Task<TimeSpan> RehearseCloseAsync(CancellationToken ct) => Task.FromResult(TimeSpan.Zero);

        /// <summary>
        /// The channel actor's step: deliver what is in flight, else read the next list. False when idle.
        /// </summary>
        public bool Step()
        {
            if (delta is not null)
            {
                return StepEncoded(delta);
            }

            if (_inFlight is var (pfns, data, round))
            {
                _inFlight = null;
                uint tag = round + 1;
                bool honourTags = owner._ordersChannels;
                for (int i = 0; i < pfns.Length; i++)
                {
                    long p = pfns[i];
                    if (honourTags && tag < owner._roundTag[p])
                    {
                        continue;
                    }

                    owner._roundTag[p] = tag;
                    data.AsSpan(i * PageGeometry.PageSize, PageGeometry.PageSize)
                        .CopyTo(owner._ram.AsSpan((int)(p * PageGeometry.PageSize)));
                }

                return true;
            }

            if (!_queue.TryDequeue(out var item))
            {
                return false;
            }

            var copy = new byte[item.Count * PageGeometry.PageSize];
            var list = item.Pfns.AsSpan(0, item.Count).ToArray();
            for (int i = 0; i < list.Length; i++)
            {
                owner._source.Ram.Page(list[i]).CopyTo(copy.AsSpan(i * PageGeometry.PageSize));
                owner.PageRead?.Invoke(list[i]);
            }

            System.Buffers.ArrayPool<long>.Shared.Return(item.Pfns);
            owner._counters.Add(copy.Length, 0, list.Length, 0);
            _inFlight = (list, copy, item.Round);
            return true;
        }

        /// <summary>
        /// <see cref="Step"/> with delta pages: read and encode a list through the production encoder in one step,
        /// deliver it in a later one; a delta is applied only onto the copy of the round it names.
        /// </summary>
        private bool StepEncoded(DeltaEncoder encoder)
        {
            if (_inFlightEncoded is var (pfns, kinds, payloads, round))
            {
                _inFlightEncoded = null;
                uint tag = round + 1;
                for (int i = 0; i < pfns.Length; i++)
                {
                    long p = pfns[i];
                    uint held = owner._roundTag[p];
                    if (tag < held)
                    {
                        continue; // an older copy arriving late (R11)
                    }

                    var page = owner._ram.AsSpan((int)(p * PageGeometry.PageSize), PageGeometry.PageSize);
                    if (kinds[i] == PageEncodingKind.Delta)
                    {
                        _ = DeltaPayload.Read(payloads[i], out uint baseRound, out int runs);
                        if (held != baseRound + 1)
                        {
                            // The real target fails the migration at the first; the rest are counted.
                            if (owner._deltasRefused++ == 0)
                            {
                                string holds = held == 0 ? "no copy" : $"the copy of round {held - 1}";
                                owner.Violations.Add($"round {round}: a delta for page {p} against its " +
                                    $"round-{baseRound} copy, but the target holds {holds}");
                            }

                            continue;
                        }

                        if (Xbzrle.Apply(payloads[i].AsSpan(runs), page) is { } bad)
                        {
                            owner.Violations.Add($"round {round}: a delta for page {p} does not decode: {bad}");
                            continue;
                        }
                    }
                    else if (PageCodec.Decode(kinds[i], payloads[i], page) is { } error)
                    {
                        owner.Violations.Add($"round {round}: page {p}: {error}");
                        continue;
                    }

                    owner._roundTag[p] = tag;
                }

                return true;
            }

            if (!_queue.TryDequeue(out var item))
            {
                return false;
            }

            var list = item.Pfns.AsSpan(0, item.Count).ToArray();
            var encodings = new PageEncodingKind[list.Length];
            var encoded = new byte[list.Length][];
            var slot = new byte[PageCodec.MaxEncodedLength];
            var tally = new PageTally();
            long bytes = 0;
            using (var lease = encoder.Enter())
            {
                for (int i = 0; i < list.Length; i++)
                {
                    owner._source.Ram.Page(list[i]).CopyTo(slot); // read once, as the real channel does
                    owner.PageRead?.Invoke(list[i]);
                    var (kind, length) = encoder.Encode(lease, list[i], item.Round, slot, false, ref tally);
                    encodings[i] = kind;
                    encoded[i] = slot[..length];
                    bytes += length;
                }
            }

            System.Buffers.ArrayPool<long>.Shared.Return(item.Pfns);
            owner._counters.Add(bytes, tally);
            _inFlightEncoded = (list, encodings, encoded, item.Round);
            return true;
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
