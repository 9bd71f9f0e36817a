using System.Reflection;
using System.Reflection.Emit;
using Migration.Protocol;
using Migration.Shared.Balloon;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Hosting;
using Migration.Shared.Machine;
using Migration.Target.Hosting;
using Migration.Target.Receiving;

namespace Migration.Target.Tests.Hosting;

/// <summary>
/// The target compiles a migration's first calls before any migration (tiered compilation is off there, so a first
/// call compiles in full inside it): every method of this repository's code that Begin reaches must be in a type
/// <see cref="SwitchoverJit"/> compiles, or run by the warm-ups before the target listens.
/// </summary>
public sealed class SwitchoverJitTests
{
    /// <summary>
    /// Run before the target listens (SwitchoverWarmup, MessageWarmup): the configuration's trip through JSON, guests
    /// booted, Begin's request parsed.
    /// </summary>
    private static readonly Type[] RunByWarmUps =
    [
        typeof(GuestConfig), typeof(WorkloadOptions), typeof(BalloonOptions), typeof(WireJson), typeof(GuestRam),
        typeof(PageGeometry), typeof(BeginRequest),
    ];

    /// <summary>Not on Begin's way: its refusals, and the discard of a Begin its caller gave up on.</summary>
    private static readonly string[] NotFollowed = [nameof(RpcErrors), nameof(IncomingMigrations.Fail)];

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes)
        .GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!)
        .ToDictionary(o => o.Value);

    [Fact]
    public void EveryMethodOfOursThatBeginCalls_IsCompiledBeforeAnyMigration()
    {
        var begin = typeof(IncomingMigrations).GetMethod(nameof(IncomingMigrations.Begin))!;
        var compiled = SwitchoverJit.Types
            .SelectMany(t => t.GetNestedTypes(BindingFlags.Public | BindingFlags.NonPublic).Prepend(t))
            .ToHashSet();

        string[] missing = [.. Reached(begin)
            .Where(m => !m.ContainsGenericParameters && !m.IsAbstract && m.GetMethodBody() is not null)
            .Select(m => m.DeclaringType!)
            .Where(t => !t.ContainsGenericParameters && !compiled.Contains(t)
                && !RunByWarmUps.Contains(t.IsNested ? t.DeclaringType : t))
            .Select(t => t.FullName!)
            .Distinct()
            .Order(StringComparer.Ordinal)];

        Assert.True(missing.Length == 0, "Begin reaches types SwitchoverJit leaves out:\n  " +
            string.Join("\n  ", missing));
        Assert.Contains(typeof(BeginRequestReader), compiled); // the walk reaches into what Begin calls
    }

    /// <summary>Every method of ours <paramref name="root"/> calls, directly or through others of ours.</summary>
    private static HashSet<MethodBase> Reached(MethodBase root)
    {
        var ours = new[] { typeof(IncomingMigrations).Assembly, typeof(SwitchoverWarmup).Assembly };
        var seen = new HashSet<MethodBase> { root };
        var queue = new Queue<MethodBase>([root]);
        while (queue.TryDequeue(out var method))
        {
            foreach (var callee in Callees(method).Where(c => ours.Contains(c.Module.Assembly)
                && !NotFollowed.Contains(c.Name) && !NotFollowed.Contains(c.DeclaringType?.Name) && seen.Add(c)))
            {
                queue.Enqueue(callee);
            }
        }

        seen.Remove(root);
        return seen;
    }

    /// <summary>The methods <paramref name="method"/>'s IL calls or constructs (call, callvirt, newobj).</summary>
    private static IEnumerable<MethodBase> Callees(MethodBase method)
    {
        byte[] il = method.GetMethodBody()?.GetILAsByteArray() ?? [];
        var module = method.Module;
        Type[]? typeArgs = method.DeclaringType is { IsGenericType: true } d ? d.GetGenericArguments() : null;
        Type[]? methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        for (int i = 0; i < il.Length;)
        {
            short value = il[i] == 0xFE ? (short)(0xFE00 | il[i + 1]) : il[i];
            var op = OpCodesByValue[value];
            i += op.Size;
            if (op == OpCodes.Call || op == OpCodes.Callvirt || op == OpCodes.Newobj)
            {
                MethodBase? callee = null;
                try
                {
                    callee = module.ResolveMethod(BitConverter.ToInt32(il, i), typeArgs, methodArgs);
                }
                catch (ArgumentException)
                {
                }

                if (callee is not null)
                {
                    yield return callee;
                }
            }

            i += op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + (4 * BitConverter.ToInt32(il, i)),
                _ => 4,
            };
        }
    }
}
