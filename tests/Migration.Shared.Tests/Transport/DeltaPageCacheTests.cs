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
    public void TheBulkPass_NeitherUsesNorFillsTheCache_ThenAMiss_ThenAHit()
    {
        using var cache = new DeltaPageCache(1 << 20);
        var encoder = new DeltaEncoder(cache, 0, StandardDeltaDefences.Instance);
        var target = new Mirror(8);
        var slot = new byte[PageCodec.MaxEncodedLength];
        var tally = new PageTally();
        var page = Random(1);

        var sent = Encode(encoder, 3, 0, page, slot, ref tally);
        Assert.Equal((PageEncodingKind.Raw, Page), sent);
        target.Apply(3, 0, sent.Kind, slot.AsSpan(0, sent.Length));
        Assert.Equal(0, cache.Count);

        page[100] ^= 0xFF;
        sent = Encode(encoder, 3, 1, page, slot, ref tally);
        Assert.Equal(PageEncodingKind.Raw, sent.Kind); // not cached yet: a miss, and cached now
        target.Apply(3, 1, sent.Kind, slot.AsSpan(0, sent.Length));

        page[2000] ^= 0xFF;
        sent = Encode(encoder, 3, 2, page, slot, ref tally);
        Assert.Equal(PageEncodingKind.Delta, sent.Kind);
        Assert.Equal(1 + 4, sent.Length); // base round 1, then zero run 2000 (2 bytes), literal 1, the byte
        target.Apply(3, 2, sent.Kind, slot.AsSpan(0, sent.Length));
        Assert.Equal(page, target.At(3).ToArray());
        Assert.Equal((1L, 1L, 0L, Page - 5L), (tally.Delta, tally.DeltaMisses, tally.DeltaOverflows,
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
    /// Two channels encode pages of their own (as the routing deals them) round after round while another thread
    /// resizes the cache up, down, to nothing and back; every delta applies to exactly its base on the target, and the
    /// target ends with every page as last sent.
    /// </summary>
    [Fact]
    public async Task ResizingWhileChannelsEncode_KeepsEveryDeltaOnItsBase()
    {
        const int Pages = 512;
        using var cache = new DeltaPageCache(Page * 64);
        var source = new byte[Pages][];
        for (int p = 0; p < Pages; p++)
        {
            source[p] = Random(p);
        }

        var target = new Mirror(Pages);
        var tallies = new PageTally[2];
        using var stop = new CancellationTokenSource();
        var resizer = Task.Run(() =>
        {
            var random = new Random(7);
            long[] sizes = [0, Page * 4, Page * 32, Page * 128, Page * 1024];
            while (!stop.IsCancellationRequested)
            {
                cache.Resize(sizes[random.Next(sizes.Length)]);
                Thread.Yield();
            }
        });
        var channels = Enumerable.Range(0, 2).Select(channel => Task.Run(() =>
        {
            var encoder = new DeltaEncoder(cache, channel, StandardDeltaDefences.Instance);
            var random = new Random(channel);
            var slot = new byte[PageCodec.MaxEncodedLength];
            for (uint round = 0; round < 40; round++)
            {
                using var lease = encoder.Enter();
                for (int p = channel; p < Pages; p += 2)
                {
                    if (round > 0 && random.Next(3) != 0)
                    {
                        continue; // not dirtied this round
                    }

                    source[p][random.Next(Page)] ^= (byte)random.Next(1, 256);
                    if (random.Next(20) == 0)
                    {
                        random.NextBytes(source[p]); // rewritten: an overflow
                    }

                    source[p].CopyTo(slot, 0);
                    var (kind, length) = encoder.Encode(lease, p, round, slot, false, ref tallies[channel]);
                    target.Apply(p, round, kind, slot.AsSpan(0, length));
                }
            }
        })).ToArray();

        await Task.WhenAll(channels);
        await stop.CancelAsync();
        await resizer;
        for (int p = 0; p < Pages; p++)
        {
            Assert.Equal(source[p], target.At(p).ToArray());
        }

        Assert.True(tallies.Sum(t => t.Delta) > 0, "no delta was sent");
        Assert.True(cache.Resizes > 0, "the cache was never resized while in use");
    }
}
