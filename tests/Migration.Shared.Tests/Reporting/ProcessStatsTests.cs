using System.Reflection.Emit;
using Migration.Shared.Reporting;

namespace Migration.Shared.Tests.Reporting;

/// <summary>The process's own cost as a report carries it: CPU and what the JIT compiled since a mark.</summary>
public sealed class ProcessStatsTests
{
    [Fact]
    public void A_method_compiled_after_the_mark_is_counted_with_its_time()
    {
        var mark = ProcessStats.Now();
        var method = new DynamicMethod("Answer", typeof(int), Type.EmptyTypes);
        var il = method.GetILGenerator();
        il.Emit(OpCodes.Ldc_I4, 42);
        il.Emit(OpCodes.Ret);
        Assert.Equal(42, ((Func<int>)method.CreateDelegate(typeof(Func<int>)))());

        var stats = ProcessStats.Capture(mark);
        Assert.True(stats.MigrationMethodsJitted >= 1, $"{stats.MigrationMethodsJitted} methods");
        Assert.True(stats.MigrationJitMs > 0, $"{stats.MigrationJitMs} ms");
        Assert.True(stats.MigrationCpuSeconds >= 0);
    }

    [Fact]
    public void Without_a_mark_there_is_no_migration_share()
    {
        var stats = ProcessStats.Capture();
        Assert.Null(stats.MigrationCpuSeconds);
        Assert.Null(stats.MigrationJitMs);
        Assert.Null(stats.MigrationMethodsJitted);
        Assert.True(stats.CpuSeconds > 0);
    }
}
