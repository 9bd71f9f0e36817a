using System.Reflection;
using System.Runtime.CompilerServices;
using Migration.Shared.Balloon;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Machine;
using Migration.Target.Receiving;
using Migration.Target.Services;

namespace Migration.Target.Hosting;

/// <summary>
/// Compiles the switchover's own code before any migration. The target runs with tiered compilation off, so a
/// method's first call compiles it in full; the switchover's methods are first called inside the downtime, where that
/// lengthened the target's restore (its rebuild, the device state's decoding, the reply's bookkeeping). The
/// rehearsals run the rebuild's shared code, not these; this compiles every method the switchover's types declare.
/// </summary>
internal static class SwitchoverJit
{
    private static readonly Type[] Types =
    [
        typeof(Switchover), typeof(IncomingMigrations), typeof(IncomingMigration), typeof(RestoreProbe),
        typeof(MigrationService), typeof(TargetManagementHost), typeof(BalloonState), typeof(DescriptorSnapshot),
        typeof(PageBitmap), typeof(VirtualMachine), typeof(GuestKernel),
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
