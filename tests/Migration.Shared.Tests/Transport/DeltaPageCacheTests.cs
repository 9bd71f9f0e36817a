using Migration.Shared.Guest;
using Migration.Shared.Transport;

namespace Migration.Shared.Tests.Transport;

/// <summary>
/// The delta-page cache and the encoder around it: bounded in bytes, eviction by age within a set, zero pages, resizing
/// while channels encode, and the rules that keep a delta's base the copy the target holds (C3).
/// </summary>
public sealed class DeltaPageCacheTests
{
    private const int Page = PageGeometry.PageSize;

    /// <summary>A target in miniature: one copy per page, the round it came in, deltas only onto their base.</summary>
    private sealed class Mirror(int pages)
    {
        private readonly byte[] _ram = new byte[pages * Page];
        private readonly uint[] _held = new uint[pages]; // round + 1; 0 = never received

        public Span<byte> At(long pfn) => _ram.AsSpan((int)(pfn * Page), Page);

        public void Apply(long pfn, uint round, PageEncodingKind kind, ReadOnlySpan<byte> payload)
        {
            switch (kind)
            {
                case PageEncodingKind.Zero:
                    At(pfn).Clear();
                    break;
                case PageEncodingKind.Delta:
                    Assert.Null(DeltaPayload.Read(payload, out uint baseRound, out int runs));
                    Assert.True(_held[pfn] == baseRound + 1,
                        $"delta for page {pfn} against round {baseRound}, the target holds {(int)_held[pfn] - 1}");
                    Assert.Null(Xbzrle.Apply(payload[runs..], At(pfn)));
                    break;
                default:
                    Assert.Null(PageCodec.Decode(kind, payload, At(pfn)));
                    break;
            }

            _held[pfn] = round + 1;
        }
    }

    private static (PageEncodingKind Kind, int Length) Encode(DeltaEncoder encoder, long pfn, uint round,
        ReadOnlySpan<byte> page, byte[] slot, ref PageTally tally, bool compress = false)
    {
        page.CopyTo(slot);
        using var lease = encoder.Enter();
        return encoder.Encode(lease, pfn, round, slot, compress, ref tally);
    }

    private static byte[] Random(int seed)
    {
        var page = new byte[Page];
        new Random(seed).NextBytes(page);
        return page;
    }

    [Theory]
    [InlineData(0L, 0)]
    [InlineData(Page * 3L, 0)]             // less than a set of four: no slot at all
    [InlineData((Page * 9L) + 100, 8)]     // whole sets only
    [InlineData(64L << 20, 16384)]
    public void TheCache_IsBoundedInBytes(long bytes, int slots)
    {
        using var cache = new DeltaPageCache(bytes);
        Assert.Equal(slots, cache.Slots);
        Assert.True(cache.CapacityBytes <= bytes);
        var page = Random(0);
        using (var lease = cache.Enter())
        {
            for (long pfn = 0; pfn < 10 * (slots + 4); pfn++)
            {
                lock (lease.LockFor(pfn))
                {
                    lease.Put(pfn, 1, 0, page);
                }
            }
        }

        Assert.Equal(slots, cache.Count);
        Assert.Throws<ArgumentOutOfRangeException>(() => new DeltaPageCache(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Resize(DeltaPageCache.MaxBytes + 1));
    }

    [Fact]
    public void AFullSet_EvictsTheEntrySentInTheOldestRound()
    {
        using var cache = new DeltaPageCache(Page * DeltaPageCache.Ways); // one set: every page lands in it
        using var lease = cache.Enter();
        for (long pfn = 0; pfn < DeltaPageCache.Ways; pfn++)
        {
            lease.Put(pfn, (uint)(pfn + 1), 0, Random((int)pfn));
        }

        lease.Put(0, 9, 0, Random(100)); // page 0 was sent again: now the youngest
        lease.Put(50, 10, 0, Random(50));
        Assert.True(lease.TryGet(0, out var kept));
        Assert.Equal(9u, kept.Round);
        Assert.True(kept.Bytes.SequenceEqual(Random(100)));
        Assert.False(lease.TryGet(1, out _)); // round 2, the oldest: evicted
        Assert.True(lease.TryGet(50, out _));
    }

    [Fact]
    public void AZeroPage_TurnsItsEntryIntoZeros_AndEvictsNothing()
    {
        using var cache = new DeltaPageCache(Page * DeltaPageCache.Ways);
        using (var lease = cache.Enter())
        {
            for (long pfn = 0; pfn < DeltaPageCache.Ways; pfn++)
            {
                lease.Put(pfn, 1, 0, Random((int)pfn));
            }

            lease.PutZero(2, 3, 1);
            lease.PutZero(77, 3, 1); // not cached: nothing to update, and no room is made for it
            Assert.True(lease.TryGet(2, out var zero));
            Assert.True(zero.Zero);
            Assert.Equal((3u, 1), (zero.Round, zero.Channel));
            Assert.False(lease.TryGet(77, out _));
        }

        Assert.Equal(DeltaPageCache.Ways, cache.Count);
    }

    [Fact]
    public void Resizing_KeepsTheMostRecentlySentEntries()
    {
        using var cache = new DeltaPageCache(Page * 64);
        using (var lease = cache.Enter())
        {
            for (long pfn = 0; pfn < 64; pfn++)
            {
                lease.Put(pfn, (uint)pfn, 0, Random((int)pfn));
            }
        }

        cache.Resize(Page * 4); // one set
        using (var lease = cache.Enter())
        {
            for (long pfn = 60; pfn < 64; pfn++)
            {
                Assert.True(lease.TryGet(pfn, out var entry));
                Assert.True(entry.Bytes.SequenceEqual(Random((int)pfn)), $"page {pfn} lost its bytes in the move");
            }
        }

        Assert.Equal(4, cache.Count);
        cache.Resize(0);
        Assert.Equal(0, cache.Count);
        cache.Resize(Page * 8);
        Assert.Equal(8, cache.Slots);
        cache.Dispose();
        cache.Resize(Page * 16); // after the migration: nothing happens
        Assert.Equal(0, cache.Slots);
    }

    [Fact]
    public void TheBulkPass_FillsOnlyFreeSlots_ThenAMiss_ThenAHit()
    {
        using var cache = new DeltaPageCache(Page * DeltaPageCache.Ways); // one set of four
        var encoder = new DeltaEncoder(cache, 0, StandardDeltaDefences.Instance);
        var target = new Mirror(8);
        var slot = new byte[PageCodec.MaxEncodedLength];
        var tally = new PageTally();
        var pages = Enumerable.Range(0, 6).Select(p => Random(p)).ToArray();

        for (int p = 0; p < 6; p++)
        {
            var sent = Encode(encoder, p, 0, pages[p], slot, ref tally);
            Assert.Equal((PageEncodingKind.Raw, Page), sent);
            target.Apply(p, 0, sent.Kind, slot.AsSpan(0, sent.Length));
        }

        Assert.Equal(4, cache.Count); // pages 4 and 5 found the set full: round 0 evicts nothing
        Assert.Equal(0, tally.DeltaMisses);

        var kinds = new List<PageEncodingKind>();
        for (int p = 0; p < 6; p++)
        {
            pages[p][2000] ^= 0xFF;
            var sent = Encode(encoder, p, 1, pages[p], slot, ref tally);
            kinds.Add(sent.Kind);
            target.Apply(p, 1, sent.Kind, slot.AsSpan(0, sent.Length));
            Assert.Equal(pages[p], target.At(p).ToArray());
        }

        Assert.Equal([.. Enumerable.Repeat(PageEncodingKind.Delta, 4), PageEncodingKind.Raw, PageEncodingKind.Raw],
            kinds);
        // Base round 0, then zero run 2000 (2 bytes), literal 1, the byte.
        Assert.Equal((4L, 2L, 0L, 4 * (Page - 5L)), (tally.Delta, tally.DeltaMisses, tally.DeltaOverflows,
            tally.DeltaBytesSaved));
    }

    [Fact]
    public void TheCache_HoldsTheBytesSent_NotWhatRamHoldsLater()
    {
        using var cache = new DeltaPageCache(1 << 20);
        var encoder = new DeltaEncoder(cache, 0, StandardDeltaDefences.Instance);
        var target = new Mirror(1);
        var slot = new byte[PageCodec.MaxEncodedLength];
        var tally = new PageTally();
        var ram = Random(2);

        var sent = Encode(encoder, 0, 1, ram, slot, ref tally); // what was read is what went
        target.Apply(0, 1, sent.Kind, slot.AsSpan(0, sent.Length));
        ram[10] ^= 1; // the guest writes after the read: logged, sent again next round
        ram[3000] ^= 1;
        sent = Encode(encoder, 0, 2, ram, slot, ref tally);
        Assert.Equal(PageEncodingKind.Delta, sent.Kind);
        target.Apply(0, 2, sent.Kind, slot.AsSpan(0, sent.Length));
        Assert.Equal(ram, target.At(0).ToArray());
    }

    [Fact]
    public void AnOverflow_SendsThePageWhole_AndTheNextDeltaIsAgainstIt()
    {
        using var cache = new DeltaPageCache(1 << 20);
        var encoder = new DeltaEncoder(cache, 0, StandardDeltaDefences.Instance);
        var target = new Mirror(1);
        var slot = new byte[PageCodec.MaxEncodedLength];
        var tally = new PageTally();

        var sent = Encode(encoder, 0, 1, Random(3), slot, ref tally);
        target.Apply(0, 1, sent.Kind, slot.AsSpan(0, sent.Length));
        var rewritten = Random(4);
        sent = Encode(encoder, 0, 2, rewritten, slot, ref tally);
        Assert.Equal(PageEncodingKind.Raw, sent.Kind);
        Assert.Equal(1, tally.DeltaOverflows);
        target.Apply(0, 2, sent.Kind, slot.AsSpan(0, sent.Length));

        rewritten[7] ^= 7;
        sent = Encode(encoder, 0, 3, rewritten, slot, ref tally);
        Assert.Equal(PageEncodingKind.Delta, sent.Kind);
        Assert.Null(DeltaPayload.Read(slot.AsSpan(0, sent.Length), out uint baseRound, out _));
        Assert.Equal(2u, baseRound);
        target.Apply(0, 3, sent.Kind, slot.AsSpan(0, sent.Length));
        Assert.Equal(rewritten, target.At(0).ToArray());
    }

    [Fact]
    public void AZeroPage_IsADeltaBaseOfZeros()
    {
        using var cache = new DeltaPageCache(1 << 20);
        var encoder = new DeltaEncoder(cache, 0, StandardDeltaDefences.Instance);
        var target = new Mirror(1);
        var slot = new byte[PageCodec.MaxEncodedLength];
        var tally = new PageTally();

        var sent = Encode(encoder, 0, 1, Random(5), slot, ref tally);
        target.Apply(0, 1, sent.Kind, slot.AsSpan(0, sent.Length));
        sent = Encode(encoder, 0, 2, new byte[Page], slot, ref tally);
        Assert.Equal((PageEncodingKind.Zero, 0), sent);
        target.Apply(0, 2, sent.Kind, []);

        var sparse = new byte[Page];
        sparse[42] = 1;
        sent = Encode(encoder, 0, 3, sparse, slot, ref tally);
        Assert.Equal(PageEncodingKind.Delta, sent.Kind);
        target.Apply(0, 3, sent.Kind, slot.AsSpan(0, sent.Length));
        Assert.Equal(sparse, target.At(0).ToArray());
    }

    [Fact]
    public void ADelta_GoesOnlyOnTheChannelThatCarriedItsBase()
    {
        using var cache = new DeltaPageCache(1 << 20);
        var first = new DeltaEncoder(cache, 0, StandardDeltaDefences.Instance);
        var second = new DeltaEncoder(cache, 1, StandardDeltaDefences.Instance);
        var slot = new byte[PageCodec.MaxEncodedLength];
        var tally = new PageTally();
        var page = Random(6);

        Encode(first, 5, 1, page, slot, ref tally);
        page[1] ^= 1;
        Assert.Equal(PageEncodingKind.Raw, Encode(second, 5, 2, page, slot, ref tally).Kind); // a miss: other channel
        page[2] ^= 1;
        Assert.Equal(PageEncodingKind.Raw, Encode(first, 5, 3, page, slot, ref tally).Kind);  // moved on: again
        page[3] ^= 1;
        Assert.Equal(PageEncodingKind.Delta, Encode(first, 5, 4, page, slot, ref tally).Kind);
        Assert.Equal(3, tally.DeltaMisses); // the first send (round 1) was a miss too
    }

    [Fact]
    public void AMiss_MayGoAsLz4_AndIsCachedWhole()
    {
        using var cache = new DeltaPageCache(1 << 20);
        var encoder = new DeltaEncoder(cache, 0, StandardDeltaDefences.Instance);
        var target = new Mirror(1);
        var slot = new byte[PageCodec.MaxEncodedLength];
        var tally = new PageTally();
        var text = new byte[Page];
        for (int i = 0; i < Page; i++)
        {
            text[i] = (byte)('a' + (i % 7));
        }

        var sent = Encode(encoder, 0, 1, text, slot, ref tally, compress: true);
        Assert.Equal(PageEncodingKind.Lz4, sent.Kind);
        target.Apply(0, 1, sent.Kind, slot.AsSpan(0, sent.Length));
        text[99] = 0;
        sent = Encode(encoder, 0, 2, text, slot, ref tally, compress: true);
        Assert.Equal(PageEncodingKind.Delta, sent.Kind);
        target.Apply(0, 2, sent.Kind, slot.AsSpan(0, sent.Length));
        Assert.Equal(text, target.At(0).ToArray());
    }

    /// <summary>
    /// Two channels encode pages of their own (as the routing deals them) round after round, and in every round a
    /// third thread resizes the cache, up, down, to nothing and back, released together with them; every delta applies
    /// to exactly its base on the target, and the target ends with every page as last sent.
    /// </summary>
    [Fact]
    public async Task ResizingWhileChannelsEncode_KeepsEveryDeltaOnItsBase()
    {
        const int Pages = 512;
        const int Rounds = 40;
        long[] sizes = [Page * 1024, 0, Page * 4, Page * 128, Page * 32];
        using var cache = new DeltaPageCache(Page * 64);
        var source = new byte[Pages][];
        for (int p = 0; p < Pages; p++)
        {
            source[p] = Random(p);
        }

        var target = new Mirror(Pages);
        var tallies = new PageTally[2];
        var encoders = new[]
        {
            new DeltaEncoder(cache, 0, StandardDeltaDefences.Instance),
            new DeltaEncoder(cache, 1, StandardDeltaDefences.Instance),
        };
        var randoms = new[] { new Random(0), new Random(1) };
        var slots = new[] { new byte[PageCodec.MaxEncodedLength], new byte[PageCodec.MaxEncodedLength] };
        using var start = new Barrier(3);
        for (uint round = 0; round < Rounds; round++)
        {
            long size = sizes[round % sizes.Length];
            uint r = round;
            var resize = Run(() => cache.Resize(size));
            var channels = Enumerable.Range(0, 2).Select(channel => Run(() =>
            {
                var random = randoms[channel];
                using var lease = encoders[channel].Enter();
                for (int p = channel; p < Pages; p += 2)
                {
                    if (r > 0 && random.Next(3) != 0)
                    {
                        continue; // not dirtied this round
                    }

                    source[p][random.Next(Page)] ^= (byte)random.Next(1, 256);
                    if (random.Next(20) == 0)
                    {
                        random.NextBytes(source[p]); // rewritten: an overflow
                    }

                    source[p].CopyTo(slots[channel], 0);
                    var (kind, length) = encoders[channel].Encode(lease, p, r, slots[channel], false,
                        ref tallies[channel]);
                    target.Apply(p, r, kind, slots[channel].AsSpan(0, length));
                }
            }));
            await Task.WhenAll([resize, .. channels]);
        }

        for (int p = 0; p < Pages; p++)
        {
            Assert.Equal(source[p], target.At(p).ToArray());
        }

        Assert.True(tallies.Sum(t => t.Delta) > 0, "no delta was sent");
        Assert.Equal(Rounds, cache.Resizes); // every round's size differs from the one before

        // Each on a thread of its own, released together, so the resize meets the encoders mid-round.
        Task Run(Action work) => Task.Factory.StartNew(() =>
        {
            start.SignalAndWait();
            work();
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }
}
