namespace Migration.Shared.Guest.Workloads;

/// <summary>
/// QEMU's migration test guest: vCPU 0 increments byte 0 of each page of the range reserved at 1 MiB, in ascending
/// order, forever. Other vCPUs idle. <see cref="Verify"/> is the test's check on the destination.
/// </summary>
public sealed class AbWorkload : Workload
{
    private long _cursor;

    public AbWorkload(WorkloadContext context, int vcpu)
        : base(context, vcpu)
    {
    }

    public override WorkloadKind Kind => WorkloadKind.Ab;

    public override bool IsWarm => true;

    public override StepResult Step()
    {
        if (Vcpu != 0)
        {
            return StepResult.Idle;
        }

        long gpa = (WorkloadOptions.AbFirstPfn + _cursor) << PageGeometry.PageShift;
        Memory.WriteByte(gpa, unchecked((byte)(Memory.ReadByte(gpa) + 1)));
        PageWrites++;
        _cursor = (_cursor + 1) % Options.AbPages;
        return StepResult.Progress;
    }

    /// <summary>
    /// QEMU's rule: every page holds the same byte as the first, except at most one place where the value drops by
    /// exactly one (the point the loop had reached). Returns null when the range passes, else what is wrong.
    /// </summary>
    public static string? Verify(GuestRam ram, long firstPfn, long pages)
    {
        ArgumentNullException.ThrowIfNull(ram);
        ram.CheckRange(firstPfn, pages);
        byte expected = ram.Page(firstPfn)[0];
        bool dropped = false;
        for (long i = 1; i < pages; i++)
        {
            byte b = ram.Page(firstPfn + i)[0];
            if (b == expected)
            {
                continue;
            }

            if (!dropped && b == unchecked((byte)(expected - 1)))
            {
                dropped = true;
                expected = b;
                continue;
            }

            return $"page {firstPfn + i}: byte 0 is {b}, expected {expected}" +
                $"{(dropped ? " (a drop was already seen)" : string.Empty)}.";
        }

        return null;
    }

    protected override void SaveState(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(_cursor);
    }

    protected override void LoadState(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        _cursor = ReadCount(reader, Options.AbPages, "ab cursor pages");
    }
}
