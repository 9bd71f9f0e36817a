using Migration.Shared.Machine;

namespace Migration.Target.Receiving;

/// <summary>
/// <c>--run-after</c>: the resumed guest has run a while; stop it and run its self-check, to show it kept working on
/// this side. Prints <c>run-after: self-check ok|FAILED: ...</c>, the line the demo and the tests read.
/// </summary>
internal static class RunAfterCheck
{
    public readonly record struct Result(bool Ok, string Text);

    public static Result Run(VirtualMachine vm, string migrationId, double seconds, ILogger log)
    {
        ArgumentNullException.ThrowIfNull(vm);
        vm.Pause();
        var check = vm.Kernel.SelfCheck();
        string crashes = string.Join("; ", vm.Crashes);
        bool ok = check.Ok && crashes.Length == 0;
        TargetLog.RanAfter(log, migrationId, seconds, check.ToString(), crashes);
        Console.WriteLine($"run-after: self-check {(ok ? "ok" : "FAILED")}: {check}" +
            $"{(crashes.Length > 0 ? "; " + crashes : string.Empty)}");
        return new Result(ok, check.ToString());
    }
}
