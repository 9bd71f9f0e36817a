using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Guest.Kernel;

public class GuestKernelTests
{
    [Fact]
    public void Boot_PutsEveryManagedPageOnTheFreeLists()
    {
        using var g = new TestGuest(16L << 20);
        Assert.Equal(g.Kernel.ManagedPages, g.Kernel.FreePages);
        Assert.Equal(4096 - 1 - 16, g.Kernel.ManagedPages); // header + 16 descriptor pages
        var check = g.Kernel.SelfCheck();
        Assert.True(check.Ok, check.ToString());
        Assert.Equal(g.Kernel.FreePages, check.FreePagesFound);
    }

    [Fact]
    public void ADescriptorSnapshot_GivesTheFreeMapOfItsMoment_WhateverTheGuestDoesAfter()
    {
        using var g = new TestGuest(16L << 20);
        long a = g.Kernel.Allocate(3, PageOwner.Anonymous);
        _ = g.Kernel.Allocate(0, PageOwner.PageCache);
        var snapshot = g.Kernel.SnapshotDescriptors();
        var then = g.Kernel.FreePageMap();

        g.Kernel.Free(a, 3);
        _ = g.Kernel.Allocate(5, PageOwner.Anonymous);

        Assert.Equal(then.ToBytes(), snapshot.FreePageMap().ToBytes());
        Assert.NotEqual(then.ToBytes(), g.Kernel.FreePageMap().ToBytes());
        Assert.Equal(g.Kernel.ManagedPages - 9, then.Count); // 8 + 1 pages allocated
    }

    [Fact]
    public void AllocateOrderZero_SplitsALargeBlock_AndFreeMergesItBack()
    {
        using var g = new TestGuest(16L << 20);
        // Use up the small blocks boot left at the bottom of RAM, so the next order-0 request must split a 4 MiB block.
        for (int k = 0; k < GuestKernel.MaxOrder; k++)
        {
            while (g.Kernel.FreeBlocks(k) > 0)
            {
                g.Kernel.Allocate(k, PageOwner.KernelData);
            }
        }

        long[] before = Enumerable.Range(0, GuestKernel.OrderCount).Select(k => g.Kernel.FreeBlocks(k)).ToArray();

        long pfn = g.Kernel.Allocate(0, PageOwner.Anonymous);

        // One order-10 block was split: one free buddy at each of orders 0..9 appeared.
        Assert.Equal(before[10] - 1, g.Kernel.FreeBlocks(10));
        for (int k = 0; k < 10; k++)
        {
            Assert.Equal(before[k] + 1, g.Kernel.FreeBlocks(k));
        }

        Assert.Equal(PageState.AllocatedHead, g.Kernel.ReadDescriptor(pfn).State);
        Assert.True(g.Kernel.SelfCheck().Ok);

        g.Kernel.Free(pfn, 0);
        for (int k = 0; k <= 10; k++)
        {
            Assert.Equal(before[k], g.Kernel.FreeBlocks(k));
        }

        Assert.True(g.Kernel.SelfCheck().Ok);
    }

    [Fact]
    public void Allocate_UntilExhausted_ReturnsMinusOneThenThrows()
    {
        using var g = new TestGuest(8L << 20);
        var blocks = new List<long>();
        long pfn;
        while ((pfn = g.Kernel.TryAllocate(0, PageOwner.Anonymous)) >= 0)
        {
            blocks.Add(pfn);
        }

        Assert.Equal(g.Kernel.ManagedPages, blocks.Count);
        Assert.Equal(blocks.Count, blocks.Distinct().Count());
        Assert.Equal(0, g.Kernel.FreePages);
        Assert.Throws<GuestOutOfMemoryException>(() => g.Kernel.Allocate(0, PageOwner.Anonymous));

        foreach (long b in blocks)
        {
            g.Kernel.Free(b, 0);
        }

        Assert.Equal(g.Kernel.ManagedPages, g.Kernel.FreePages);
        Assert.True(g.Kernel.SelfCheck().Ok);
        Assert.True(g.Kernel.FreeBlocks(10) > 0, "freed pages must merge back into 4 MiB blocks");
    }

    [Fact]
    public void Free_Twice_ThrowsNamingThePage()
    {
        using var g = new TestGuest();
        long pfn = g.Kernel.Allocate(2, PageOwner.Anonymous);
        g.Kernel.Free(pfn, 2);
        var ex = Assert.Throws<GuestKernelException>(() => g.Kernel.Free(pfn, 2));
        Assert.Equal(pfn, ex.Pfn);
        Assert.Contains($"page {pfn}", ex.Message);
        Assert.Contains("double free", ex.Message);
    }

    [Fact]
    public void Free_WrongOrderOrTailPage_Throws()
    {
        using var g = new TestGuest();
        long pfn = g.Kernel.Allocate(3, PageOwner.Anonymous);
        Assert.Contains("allocated as order 3",
            Assert.Throws<GuestKernelException>(() => g.Kernel.Free(pfn, 2)).Message);
        Assert.Contains("not an allocated block head",
            Assert.Throws<GuestKernelException>(() => g.Kernel.Free(pfn + 1, 0)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => g.Kernel.Free(1L << 30, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => g.Kernel.Allocate(11, PageOwner.Anonymous));
    }

    [Fact]
    public void RandomAllocFree_KeepsTheKernelConsistent()
    {
        for (ulong seed = 1; seed <= 8; seed++)
        {
            using var g = new TestGuest(16L << 20);
            var rng = new GuestRandom(seed);
            var held = new List<(long Pfn, int Order)>();
            for (int i = 0; i < 3000; i++)
            {
                if (held.Count > 0 && rng.Next(3) == 0)
                {
                    int k = (int)rng.Next(held.Count);
                    g.Kernel.Free(held[k].Pfn, held[k].Order);
                    held.RemoveAt(k);
                }
                else
                {
                    int order = (int)rng.Next(GuestKernel.OrderCount);
                    long pfn = g.Kernel.TryAllocate(order, PageOwner.Anonymous, stamp: rng.Next(2) == 0);
                    if (pfn >= 0)
                    {
                        held.Add((pfn, order));
                    }
                }
            }

            var check = g.Kernel.SelfCheck();
            Assert.True(check.Ok, $"seed {seed}: {check}");
            Assert.Equal(g.Kernel.ManagedPages - held.Sum(h => 1L << h.Order), g.Kernel.FreePages);
        }
    }

    [Fact]
    public void Poison_FreedPagesArePoisoned_AndSelfCheckPasses()
    {
        using var g = new TestGuest(8L << 20, poison: 0xAA);
        Assert.True(g.Kernel.SelfCheck().Ok);
        long pfn = g.Kernel.Allocate(1, PageOwner.Anonymous);
        g.Memory.WriteUInt64(pfn << PageGeometry.PageShift, 0x1234);
        g.Kernel.Free(pfn, 1);
        Assert.True(g.Ram.Page(pfn).IndexOfAnyExcept((byte)0xAA) < 0);
        Assert.True(g.Kernel.SelfCheck().Ok);
        Assert.Empty(g.Kernel.PoisonViolations);
    }

    [Fact]
    public void Poison_WriteToFreePage_IsReportedOnAllocationAndBySelfCheck()
    {
        using var g = new TestGuest(8L << 20, poison: 0xAA);
        long pfn = g.Kernel.Allocate(0, PageOwner.Anonymous);
        g.Kernel.Free(pfn, 0);
        g.Ram.Page(pfn)[100] = 0x55; // a stray write into freed memory

        var check = g.Kernel.SelfCheck();
        Assert.False(check.Ok);
        Assert.Contains(check.Findings,
            f => f.Contains($"page {pfn}: free but not poisoned (offset 100", StringComparison.Ordinal));

        long again = g.Kernel.Allocate(0, PageOwner.Anonymous); // LIFO: the same page comes back
        Assert.Equal(pfn, again);
        var violation = Assert.Single(g.Kernel.PoisonViolations);
        Assert.Equal(new PoisonViolation(pfn, 100, 0xAA, 0x55), violation);
        Assert.Equal(1, g.Kernel.PoisonViolationCount);
    }

    [Fact]
    public void SelfCheck_FindsACorruptedFreeListLink()
    {
        using var g = new TestGuest();
        long a = g.Kernel.Allocate(0, PageOwner.Anonymous);
        long b = g.Kernel.Allocate(0, PageOwner.Anonymous);
        g.Kernel.Free(a, 0);
        g.Kernel.Free(b, 0); // a and b are buddies of each other? only if adjacent; corrupt b's link either way

        long head = b;
        var d = g.Kernel.ReadDescriptor(head);
        Assert.Equal(PageState.FreeHead, d.State);
        // Point the head's next link at a kernel page.
        long nextField = g.Kernel.Layout.DescriptorAddress(head) + 4;
        BitConverter.TryWriteBytes(g.Ram.Page(nextField >> PageGeometry.PageShift)[(int)(nextField & 4095)..], 0u);

        var check = g.Kernel.SelfCheck();
        Assert.False(check.Ok);
        Assert.Contains(check.Findings, f => f.Contains("page 0", StringComparison.Ordinal));
    }

    [Fact]
    public void SelfCheck_FindsAPageFromTheWrongPlace()
    {
        using var g = new TestGuest();
        long a = g.Kernel.Allocate(0, PageOwner.Anonymous, stamp: true);
        long b = g.Kernel.Allocate(0, PageOwner.Anonymous, stamp: true);
        Assert.True(g.Kernel.SelfCheck().Ok);

        g.Ram.Page(a).CopyTo(g.Ram.Page(b)); // b now holds a's bytes, as if a page arrived at the wrong place

        var check = g.Kernel.SelfCheck();
        Assert.False(check.Ok);
        Assert.Contains(check.Findings, f => f.StartsWith($"page {b}: holds page {a}", StringComparison.Ordinal));
    }

    [Fact]
    public void SelfCheck_FindsATailInsideAFreeBlockMarkedAsHead()
    {
        using var g = new TestGuest();
        long pfn = g.Kernel.Allocate(4, PageOwner.Anonymous);
        long inner = pfn + 3;
        long field = g.Kernel.Layout.DescriptorAddress(inner);
        g.Ram.Page(field >> PageGeometry.PageShift)[(int)(field & 4095)] = (byte)PageState.AllocatedHead;

        var check = g.Kernel.SelfCheck();
        Assert.Contains(check.Findings,
            f => f.StartsWith($"page {inner}: inside the order-4 block at {pfn}", StringComparison.Ordinal));
    }

    [Fact]
    public void Attach_ResumesTheKernelInRam_AndRejectsGarbage()
    {
        using var g = new TestGuest();
        long pfn = g.Kernel.Allocate(5, PageOwner.Anonymous);
        var attached = GuestKernel.Attach(g.Memory);
        Assert.Equal(g.Kernel.FreePages, attached.FreePages);
        attached.Free(pfn, 5);
        Assert.True(attached.SelfCheck().Ok);

        g.Ram.Page(0)[0] ^= 0xFF;
        var ex = Assert.Throws<GuestKernelException>(() => GuestKernel.Attach(g.Memory));
        Assert.Contains("page 0", ex.Message);
    }

    [Fact]
    public void Layout_MovesDescriptorsAboveAReservationTheyWouldOverlap()
    {
        var layout = KernelLayout.Compute(pageCount: 1L << 18, reservedFirstPfn: 256, reservedPages: 64 * 256);
        Assert.Equal(256 + (64 * 256), layout.DescriptorFirstPfn);
        Assert.True(layout.IsReservedPage(256));
        Assert.False(layout.IsManagedPage(300));
        Assert.True(layout.IsManagedPage(5));

        var small = KernelLayout.Compute(pageCount: 4096, reservedFirstPfn: 256, reservedPages: 256);
        Assert.Equal(1, small.DescriptorFirstPfn); // 16 descriptor pages fit below 1 MiB
    }

    [Fact]
    public void Layout_TooSmallForTheReservation_Throws() =>
        Assert.Throws<ArgumentException>(
            () => KernelLayout.Compute(pageCount: 2048, reservedFirstPfn: 256, reservedPages: 1700));

    [Fact]
    public void Allocation_DirtiesPagesThroughTheWritePath()
    {
        using var g = new TestGuest();
        g.Log.Enable();
        long pfn = g.Kernel.Allocate(0, PageOwner.Anonymous, stamp: true);
        Assert.True(g.Log.IsLogged(0), "header page counters changed");
        Assert.True(g.Log.IsLogged(g.Kernel.Layout.DescriptorAddress(pfn) >> PageGeometry.PageShift),
            "descriptor written");
        Assert.True(g.Log.IsLogged(pfn), "stamp written");
    }

    [Fact]
    public void InitOnAlloc_ZeroesWhatItHandsOut_AndTravelsInTheHeader()
    {
        using var ram = GuestRam.Allocate(16L << 20);
        var memory = new GuestMemory(ram, new Migration.Shared.DirtyTracking.DirtyLog(ram.PageCount,
            Migration.Shared.DirtyTracking.DirtyLogMode.Eager));
        var kernel = GuestKernel.Boot(memory, new KernelBootOptions { InitOnAlloc = true });
        long pfn = kernel.Allocate(3, PageOwner.Anonymous);
        memory.FillPages(pfn, 8, 0x66);
        kernel.Free(pfn, 3);
        memory.Log.Enable();
        Assert.Equal(pfn, kernel.Allocate(3, PageOwner.Anonymous)); // LIFO: the same block again
        Assert.True(ram.Pages(pfn, 8).IndexOfAnyExcept((byte)0) < 0, "zeroed on allocation");
        Assert.True(memory.Log.IsLogged(pfn + 7), "the zeroing is a guest write");
        Assert.True(GuestKernel.Attach(memory).InitOnAlloc);
        Assert.False(new TestGuest().Kernel.InitOnAlloc);
    }
}
