using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Guest.Workloads;

/// <summary>What one <see cref="Workload.Step"/> did.</summary>
public enum StepResult
{
    /// <summary>The step changed guest memory or kernel state.</summary>
    Progress,

    /// <summary>Nothing to do right now (paced out, or an idle vCPU); a threaded runner sleeps a little.</summary>
    Idle,
}

/// <summary>What every vCPU's workload shares: the kernel, the options, the clock and the vCPU count.</summary>
public sealed record WorkloadContext(GuestKernel Kernel, WorkloadOptions Options, TimeProvider Time, int VcpuCount)
{
    public GuestMemory Memory => Kernel.Memory;

    /// <summary>The vCPUs' throttle, whose CPU clocks pace the workloads; null: every vCPU has all of its time.</summary>
    public VcpuThrottle? Throttle { get; init; }
}

/// <summary>
/// The program one vCPU runs, as a state machine advanced one small step at a time. A threaded vCPU calls
/// <see cref="Step"/> in a loop; the race fuzzer calls it when its seeded scheduler picks this vCPU. A pause only ever
/// falls between steps, so every step leaves the guest consistent (an allocation and its stamps are one step).
/// </summary>
/// <remarks>
/// All the workload's bulk state is in guest RAM (its <see cref="TaskTable"/>); <see cref="SaveState()"/> returns the
/// few words that travel as vCPU state.
/// </remarks>
public abstract class Workload
{
    private const uint StateMagic = 0x55504356; // "VCPU"

    protected Workload(WorkloadContext context, int vcpu)
    {
        ArgumentNullException.ThrowIfNull(context);
        Context = context;
        Vcpu = vcpu;
        Random = GuestRandom.ForActor(context.Options.Seed, vcpu);
    }

    public int Vcpu { get; }

    public abstract WorkloadKind Kind { get; }

    /// <summary>Warm-up is over (page cache filled, memhog's fill and free done): a good moment to migrate.</summary>
    public abstract bool IsWarm { get; }

    /// <summary>Pages this vCPU has written since it started on this host.</summary>
    public long PageWrites { get; protected set; }

    /// <summary>Steps that did work since this vCPU started on this host: its throughput, which a throttle costs.</summary>
    public long Operations => Volatile.Read(ref _operations);

    private long _operations;

    /// <summary>
    /// The clock a workload paces its work on: this vCPU's CPU time (wall time less what a throttle took), so a paced
    /// workload loses to a throttle what a CPU-bound program would.
    /// </summary>
    protected TimeProvider CpuClock => Context.Throttle is { } throttle ? throttle[Vcpu] : Context.Time;

    protected WorkloadContext Context { get; }

    protected GuestKernel Kernel => Context.Kernel;

    protected GuestMemory Memory => Context.Kernel.Memory;

    protected WorkloadOptions Options => Context.Options;

    private GuestRandom _random;

    /// <summary>The vCPU's random stream, advanced in place (a mutable struct, so handed out by reference).</summary>
    protected ref GuestRandom Random => ref _random;

    /// <summary>Runs one small step.</summary>
    public abstract StepResult Step();

    /// <summary><see cref="Step"/>, counted in <see cref="Operations"/> when it did work (the vCPU's thread calls it).</summary>
    public StepResult CountedStep()
    {
        var result = Step();
        if (result == StepResult.Progress)
        {
            Volatile.Write(ref _operations, _operations + 1);
        }

        return result;
    }

    public static Workload Create(WorkloadContext context, int vcpu)
    {
        ArgumentNullException.ThrowIfNull(context);
        return context.Options.Kind switch
        {
            WorkloadKind.Idle => new IdleWorkload(context, vcpu),
            WorkloadKind.Memhog => new MemhogWorkload(context, vcpu),
            WorkloadKind.Busy => new BusyWorkload(context, vcpu),
            WorkloadKind.Churn => new ChurnWorkload(context, vcpu),
            WorkloadKind.Ab => new AbWorkload(context, vcpu),
            WorkloadKind.PageFault => new PageFaultWorkload(context, vcpu),
            _ => throw new ArgumentOutOfRangeException(nameof(context), context.Options.Kind, "Unknown workload."),
        };
    }

    /// <summary>
    /// Rebuilds a vCPU's workload from the state <see cref="SaveState()"/> produced (the target's resume).
    /// </summary>
    public static Workload Restore(WorkloadContext context, int vcpu, ReadOnlySpan<byte> state)
    {
        var workload = Create(context, vcpu);
        using var reader = new BinaryReader(new MemoryStream(state.ToArray()));
        if (reader.ReadUInt32() != StateMagic)
        {
            throw new InvalidDataException($"vCPU {vcpu}: state does not start with the vCPU state magic.");
        }

        var kind = (WorkloadKind)reader.ReadByte();
        if (kind != context.Options.Kind)
        {
            throw new InvalidDataException(
                $"vCPU {vcpu}: state is for workload {kind}, the guest runs {context.Options.Kind}.");
        }

        workload.Random = GuestRandom.Load(reader);
        workload.LoadState(reader);
        if (reader.BaseStream.Position != state.Length)
        {
            throw new InvalidDataException(
                $"vCPU {vcpu}: state has {state.Length - reader.BaseStream.Position} bytes after its end.");
        }

        return workload;
    }

    /// <summary>The vCPU state: a few dozen bytes. Call only while the vCPU is paused.</summary>
    public byte[] SaveState()
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream))
        {
            writer.Write(StateMagic);
            writer.Write((byte)Kind);
            Random.Save(writer);
            SaveState(writer);
        }

        return stream.ToArray();
    }

    protected abstract void SaveState(BinaryWriter writer);

    protected abstract void LoadState(BinaryReader reader);

    /// <summary>
    /// Allocates a stamped block and fills its pages with data; returns the page or -1 when memory is short.
    /// </summary>
    protected long AllocateData(int order, PageOwner owner)
    {
        long pfn = Kernel.TryAllocate(order, owner, stamp: true);
        if (pfn < 0)
        {
            return -1;
        }

        for (long p = pfn; p < pfn + (1L << order); p++)
        {
            Memory.FillPagePattern(p, Random.NextUInt64(), PageStamp.DataOffset);
        }

        PageWrites += 1L << order;
        return pfn;
    }

    /// <summary>Writes 64 bytes of fresh data at a random place in the page's data area: one page dirtied.</summary>
    protected void TouchPage(long pfn)
    {
        const int Chunk = 64;
        int slots = (PageGeometry.PageSize - Chunk) / Chunk; // slot 0 holds the stamp
        long gpa = (pfn << PageGeometry.PageShift) + (Chunk * (1 + Random.Next(slots)));
        Span<byte> data = stackalloc byte[Chunk];
        for (int i = 0; i < Chunk; i += 8)
        {
            BitConverter.TryWriteBytes(data[i..], Random.NextUInt64());
        }

        Memory.Write(gpa, data);
        PageWrites++;
    }

    /// <summary>
    /// A random page of a random block in <paramref name="table"/>, restricted to the first <paramref name="entries"/>
    /// entries.
    /// </summary>
    protected long PickPage(TaskTable table, int entries)
    {
        var (pfn, order) = table[(int)Random.Next(entries)];
        return pfn + Random.Next(1L << order);
    }

    protected static long ReadTablePfn(BinaryReader reader) => reader.ReadInt64();

    /// <summary>A pacer's saved allowance: finite and not negative, or the state is not one a vCPU saved.</summary>
    protected static double ReadTokens(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        double tokens = reader.ReadDouble();
        return double.IsFinite(tokens) && tokens >= 0
            ? tokens
            : throw new InvalidDataException($"a vCPU state holds a pacing allowance of {tokens}.");
    }

    /// <summary>A saved count: not negative and at most <paramref name="max"/>.</summary>
    protected static long ReadCount(BinaryReader reader, long max, string what)
    {
        ArgumentNullException.ThrowIfNull(reader);
        long value = reader.ReadInt64();
        return value >= 0 && value <= max
            ? value
            : throw new InvalidDataException($"a vCPU state holds {value} {what} (0..{max} possible).");
    }

    protected TaskTable? OpenTable(long pfn) => pfn < 0 ? null : TaskTable.Open(Kernel, pfn);
}
