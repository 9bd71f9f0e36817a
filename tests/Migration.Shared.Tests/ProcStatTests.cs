using Migration.Shared.Reporting;

namespace Migration.Shared.Tests;

public class ProcStatTests
{
    /// <summary>A thread's name may hold spaces and parentheses: fields are counted from the last ')'.</summary>
    [Fact]
    public void FieldsAfterName_StartAtTheStateWhateverTheNameHolds()
    {
        string[] fields = ProcStat.FieldsAfterName("4242 (balloon (x) device) S 1 2 3 4 5 6 17 8 9 10 11 12 13");
        Assert.Equal("S", fields[0]); // field 3
        Assert.Equal("17", fields[7]); // field 10, minflt
        Assert.Equal("11", fields[11]); // field 14, utime
    }
}
