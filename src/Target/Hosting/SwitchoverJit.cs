using System.Reflection;
using System.Runtime.CompilerServices;
using Migration.Protocol;
using Migration.Shared.Balloon;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Internal;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Target.Diagnostics;
using Migration.Target.Receiving;
using Migration.Target.Services;

namespace Migration.Target.Hosting;

/// <summary>
/// Compiles the code of a migration's first calls before any migration: Begin's and the switchover's. The target runs
/// with tiered compilation off, so a method's first call compiles it in full; the switchover's methods are first
/// called inside the downtime, where that lengthened the target's restore (its rebuild, the device state's decoding,
/// the reply's bookkeeping), and Begin's inside setup, where checking the request, making the migration's tables and
/// moving to "receiving" compiled some fifty methods inside the call. The rehearsals run the rebuild's shared code, not
/// these; this compiles every method these types declare.
/// </summary>
internal static class SwitchoverJit
{
    /// <summary>The types whose every method is compiled (and their nested types').</summary>
    internal static readonly Type[] Types =
    [
        typeof(Switchover), typeof(IncomingMigrations), typeof(IncomingMigration), typeof(RestoreProbe),
        typeof(MigrationService), typeof(TargetManagementHost), typeof(BalloonState), typeof(DescriptorSnapshot),
        typeof(PageBitmap), typeof(VirtualMachine), typeof(GuestKernel),
        // Begin's (SwitchoverJitTests checks none of its path is left out)
        typeof(BeginRequestReader), typeof(MigrationOwner), typeof(CallerCredentials), typeof(MigrationIds),
        typeof(ProtocolVersions), typeof(ReceiverState), typeof(TargetStates), typeof(DecisionLog), typeof(TargetLog),
        typeof(TargetOptions), typeof(TargetMetrics), typeof(ProcessStats), typeof(ProcessMark), typeof(Leases),
        typeof(SpareThreads), typeof(ZeroedMemory), typeof(ZeroedArray<uint>), typeof(ZeroedArray<ulong>),
        typeof(ZeroedArray<byte>), typeof(BeginReply),
    ];

    /// <summary>Compiles them; returns how many methods.</summary>
    public static int Run()
    {
        int compiled = 0;
        const BindingFlags Declared = BindingFlags.DeclaredOnly | BindingFlags.Instance | BindingFlags.Static
            | BindingFlags.Public | BindingFlags.NonPublic;
        foreach (var type in Types.SelectMany(t => t.GetNestedTypes(Declared).Prepend(t)))
        {
            if (type.ContainsGenericParameters)
            {
                continue;
            }

            foreach (var method in type.GetMethods(Declared).Cast<MethodBase>().Concat(type.GetConstructors(Declared)))
            {
                if (method.IsAbstract || method.ContainsGenericParameters || method.GetMethodBody() is null)
                {
                    continue;
                }

                RuntimeHelpers.PrepareMethod(method.MethodHandle);
                compiled++;
            }
        }

        return compiled;
    }
}
