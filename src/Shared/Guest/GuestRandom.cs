namespace Migration.Shared.Guest;

/// <summary>
/// xoshiro256** with its state in four public words, so a vCPU's random stream can be saved into vCPU state and
/// continue on the target exactly where it stopped. <see cref="System.Random"/> cannot do that.
/// </summary>
public struct GuestRandom
{
    private ulong _s0, _s1, _s2, _s3;

    public GuestRandom(ulong seed)
    {
        // splitmix64 spreads any seed (0 included) over the whole state.
        _s0 = SplitMix(ref seed);
        _s1 = SplitMix(ref seed);
        _s2 = SplitMix(ref seed);
        _s3 = SplitMix(ref seed);
    }

    /// <summary>Derives the stream of one actor (a vCPU, a driver) from a run seed.</summary>
    public static GuestRandom ForActor(ulong runSeed, int actor) =>
        new(runSeed ^ (0x9E3779B97F4A7C15UL * (ulong)(actor + 1)));

    public ulong NextUInt64()
    {
        ulong result = RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, bound) (Lemire's multiply-shift; the tiny bias is irrelevant here).</summary>
    public long Next(long bound)
    {
        if (bound <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(bound), bound, "Bound must be positive.");
        }

        return (long)(((UInt128)NextUInt64() * (ulong)bound) >> 64);
    }

    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    public void Save(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(_s0);
        writer.Write(_s1);
        writer.Write(_s2);
        writer.Write(_s3);
    }

    public static GuestRandom Load(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var r = default(GuestRandom);
        r._s0 = reader.ReadUInt64();
        r._s1 = reader.ReadUInt64();
        r._s2 = reader.ReadUInt64();
        r._s3 = reader.ReadUInt64();
        return (r._s0 | r._s1 | r._s2 | r._s3) != 0
            ? r
            : throw new InvalidDataException("a vCPU's random state is all zero, which xoshiro256** never reaches.");
    }

    private static ulong RotateLeft(ulong x, int k) => (x << k) | (x >> (64 - k));

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
