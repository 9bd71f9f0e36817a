using System.Diagnostics.CodeAnalysis;

namespace Migration.Shared.Internal;

/// <summary>
/// Builds exceptions out of line so the hot paths that can throw stay small enough to inline.
/// </summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void PageOutOfRange(long pfn, long pageCount) =>
        throw new ArgumentOutOfRangeException(nameof(pfn), pfn,
            $"Page {pfn} is outside guest RAM (valid pages are 0..{pageCount - 1}).");

    [DoesNotReturn]
    public static void RangeOutOfRange(long firstPfn, long count, long pageCount) =>
        throw new ArgumentOutOfRangeException(nameof(firstPfn), firstPfn,
            $"Pages [{firstPfn}, {firstPfn + count}) are outside guest RAM (valid pages are 0..{pageCount - 1}).");

    [DoesNotReturn]
    public static void AddressOutOfRange(long gpa, long length, long ramBytes) =>
        throw new ArgumentOutOfRangeException(nameof(gpa), gpa,
            $"Guest-physical range [0x{gpa:x}, 0x{gpa + length:x}) is outside guest RAM of {ramBytes} bytes.");

    [DoesNotReturn]
    public static void CrossesPage(long gpa, int length) =>
        throw new ArgumentException(
            $"A {length}-byte access at guest-physical 0x{gpa:x} crosses a page boundary; use the span write.",
            nameof(gpa));
}
