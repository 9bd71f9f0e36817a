using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Guest.Workloads;

/// <summary>
/// A job that filled part of RAM with data and exited: one step allocates a block (huge-page sized, smaller when huge
/// ones run out, as the kernel falls back when THP allocation fails) and fills it, until the target is reached or RAM
/// is full; then one step frees one block, until all are back. The freed pages keep their stale data (or the poison
/// pattern). Used by memhog, and by busy for the history of a build that has been running for a while.
/// </summary>
internal sealed class StaleFill
{
    private enum Phase : byte
    {
        Fill,
        Free,
        Done,
    }

    private readonly GuestKernel _kernel;
    private readonly Func<int, long> _allocateData;
    private readonly long _targetPages;
    private readonly int _order;
    private Phase _phase;
    private TaskTable? _blocks;
    private long _pages;

    /// <param name="allocateData">
    /// Allocates a block of the given order and fills it with data; -1 when memory is short.
    /// </param>
    public StaleFill(GuestKernel kernel, Func<int, long> allocateData, long targetPages, int order)
    {
        _kernel = kernel;
        _allocateData = allocateData;
        _targetPages = targetPages;
        _order = order;
        _phase = targetPages > 0 ? Phase.Fill : Phase.Done;
    }

    public bool IsDone => _phase == Phase.Done;

    /// <summary>One allocation or one free. Call until <see cref="IsDone"/>.</summary>
    public void Step()
    {
        if (_phase == Phase.Fill)
        {
            FillStep();
        }
        else if (_phase == Phase.Free)
        {
            FreeStep();
        }
    }

    private void FillStep()
    {
        _blocks ??= TaskTable.Create(_kernel, Math.Max(1, (_targetPages >> _order) * 2));
        if (_pages >= _targetPages || _blocks.IsFull)
        {
            _phase = Phase.Free;
            return;
        }

        for (int order = _order; order >= 0; order--)
        {
            long pfn = _allocateData(order);
            if (pfn >= 0)
            {
                _blocks.Add(pfn, order);
                _pages += 1L << order;
                return;
            }
        }

        _phase = Phase.Free; // RAM is full: the job "finishes" early
    }

    private void FreeStep()
    {
        if (_blocks is null || _blocks.Count == 0)
        {
            if (_blocks is not null)
            {
                _kernel.Free(_blocks.Pfn, _blocks.Order);
                _blocks = null;
            }

            _phase = Phase.Done;
            return;
        }

        var (pfn, order) = _blocks.RemoveAt(_blocks.Count - 1);
        _kernel.Free(pfn, order);
    }

    public void Save(BinaryWriter writer)
    {
        writer.Write((byte)_phase);
        writer.Write(_blocks?.Pfn ?? -1);
        writer.Write(_pages);
    }

    public void Load(BinaryReader reader)
    {
        _phase = (Phase)reader.ReadByte();
        if (!Enum.IsDefined(_phase))
        {
            throw new InvalidDataException($"a vCPU state holds an unknown fill phase {(int)_phase}.");
        }

        long table = reader.ReadInt64();
        _blocks = table < 0 ? null : TaskTable.Open(_kernel, table);
        _pages = reader.ReadInt64();
        if (_pages < 0 || _pages > _kernel.Layout.PageCount)
        {
            throw new InvalidDataException($"a vCPU state holds {_pages} filled pages.");
        }
    }
}
