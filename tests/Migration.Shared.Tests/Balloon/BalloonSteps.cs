using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;

namespace Migration.Shared.Tests.Balloon;

/// <summary>What the balloon tests do by hand: step drivers and device to rest, copy RAM for a restored guest.</summary>
internal static class BalloonSteps
{
    /// <summary>Driver and device take turns until neither has anything left to do (and they do come to rest).</summary>
    public static void Settle(VirtualMachine vm)
    {
        int quiet = 0;
        for (int i = 0; i < 10_000 && quiet < 3; i++)
        {
            bool progress = vm.InflateDriver.Step() == StepResult.Progress;
            progress |= vm.ReportingDriver?.Step() == StepResult.Progress;
            progress |= vm.Balloon.ProcessOne();
            quiet = progress ? 0 : quiet + 1;
        }

        Assert.Equal(3, quiet);
    }

    /// <summary>A copy of guest RAM, as the target receives it.</summary>
    public static GuestRam Copy(GuestRam from)
    {
        var to = GuestRam.Allocate(from.SizeBytes);
        for (long p = 0; p < from.PageCount; p++)
        {
            from.Page(p).CopyTo(to.Page(p));
        }

        return to;
    }
}
