namespace Migration.Shared.Guest.Kernel;

/// <summary>
/// A process's list of the blocks it owns, kept in a guest block of its own (like a page table), so a workload's state
/// outside RAM stays a few words of vCPU state: the table's page and the random stream.
/// </summary>
/// <remarks>
/// Layout: <c>u32 magic, u32 count, u32 capacity, u32 reserved</c>, then one u64 per entry: page (low 32 bits) and
/// buddy order (next 8). Updates go through the guest write path like any store.
/// </remarks>
public sealed class TaskTable
{
    private const uint Magic = 0x4B534154; // "TASK"
    private const int HeaderBytes = 16;

    private readonly GuestMemory _memory;
    private readonly long _base;

    private TaskTable(GuestMemory memory, long pfn, int order)
    {
        _memory = memory;
        Pfn = pfn;
        Order = order;
        _base = pfn << PageGeometry.PageShift;
    }

    /// <summary>First page of the table's own block.</summary>
    public long Pfn { get; }

    public int Order { get; }

    public int Count => (int)_memory.ReadUInt32(_base + 4);

    public int Capacity => (int)_memory.ReadUInt32(_base + 8);

    /// <summary>Smallest buddy order whose block holds <paramref name="entries"/> entries (at most order 10).</summary>
    public static int OrderFor(long entries)
    {
        long bytes = HeaderBytes + (entries * 8);
        int order = 0;
        while (order < GuestKernel.MaxOrder && (PageGeometry.PageSize << order) < bytes)
        {
            order++;
        }

        return order;
    }

    /// <summary>
    /// Allocates and formats a table able to hold at least <paramref name="entries"/> (capped by order 10).
    /// </summary>
    public static TaskTable Create(GuestKernel kernel, long entries)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        int order = OrderFor(entries);
        long pfn = kernel.Allocate(order, PageOwner.TaskTable);
        var table = new TaskTable(kernel.Memory, pfn, order);
        long capacity = ((PageGeometry.PageSize << order) - HeaderBytes) / 8;
        kernel.Memory.WriteUInt32(table._base + 4, 0);
        kernel.Memory.WriteUInt32(table._base + 8, (uint)capacity);
        kernel.Memory.WriteUInt32(table._base, Magic);
        return table;
    }

    /// <summary>Re-opens a table from its page (the target resuming a vCPU).</summary>
    public static TaskTable Open(GuestKernel kernel, long pfn)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        var d = kernel.ReadDescriptor(pfn);
        if (d.State != PageState.AllocatedHead || d.Owner != PageOwner.TaskTable)
        {
            throw new GuestKernelException(
                $"page {pfn}: expected a task table block, descriptor says {d.State} owned by {d.Owner}.", pfn);
        }

        uint magic = kernel.Memory.ReadUInt32(pfn << PageGeometry.PageShift);
        if (magic != Magic)
        {
            throw new GuestKernelException($"page {pfn}: task table magic is 0x{magic:x8}.", pfn);
        }

        return new TaskTable(kernel.Memory, pfn, d.Order);
    }

    public bool IsFull => Count >= Capacity;

    public (long Pfn, int Order) this[int index]
    {
        get
        {
            CheckIndex(index);
            ulong e = _memory.ReadUInt64(EntryAddress(index));
            return ((long)(uint)e, (int)(byte)(e >> 32));
        }
    }

    public void Add(long pfn, int order)
    {
        int count = Count;
        if (count >= Capacity)
        {
            throw new InvalidOperationException($"Task table at page {Pfn} is full ({Capacity} entries).");
        }

        _memory.WriteUInt64(EntryAddress(count), (ulong)(uint)pfn | ((ulong)(byte)order << 32));
        _memory.WriteUInt32(_base + 4, (uint)(count + 1));
    }

    /// <summary>Removes entry <paramref name="index"/> by moving the last entry into its place.</summary>
    public (long Pfn, int Order) RemoveAt(int index)
    {
        var removed = this[index];
        int last = Count - 1;
        if (index != last)
        {
            _memory.WriteUInt64(EntryAddress(index), _memory.ReadUInt64(EntryAddress(last)));
        }

        _memory.WriteUInt32(_base + 4, (uint)last);
        return removed;
    }

    private long EntryAddress(int index) => _base + HeaderBytes + ((long)index * 8);

    private void CheckIndex(int index)
    {
        if ((uint)index >= (uint)Count)
        {
            throw new ArgumentOutOfRangeException(
                nameof(index), index, $"Task table at page {Pfn} has {Count} entries.");
        }
    }
}
