using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Postcopy;
using Migration.TestSupport;

// Usage: Migration.PostcopyStorm guarded|unguarded
// Two vCPU threads read random pages of a 16 MiB guest whose every page is still at the source, while a third forces a
// full collection every millisecond and the source answers through code that allocates. Prints what happened and
// exits 0 when every read saw its page's bytes; 2 on a wrong byte. "unguarded" reads RAM straight through its pointer,
// as a vCPU would without GuestRam's guard: a collection then waits on a vCPU stopped in the kernel inside managed
// code, and the answer it waits for needs that collection to end.
if (args is not ["guarded" or "unguarded"])
{
    Console.Error.WriteLine("usage: Migration.PostcopyStorm guarded|unguarded");
    return 1;
}

bool guarded = args[0] == "guarded";
using var ram = GuestRam.Allocate(16L << 20);
var fetch = new PageBitmap(ram.PageCount);
fetch.SetAll();
var memory = new GuestMemory(ram, new DirtyLog(ram.PageCount, DirtyLogMode.Eager));
using var source = new FakePostcopySource(pfn => (byte)(pfn * 7), allocating: true);
using var postcopy = new PostcopyRam(ram, fetch, fill: null, fillByte: 0, source.Request);
source.Attach(postcopy);
postcopy.Start();

using var stop = new CancellationTokenSource();
long collections = 0;
var collector = new Thread(() =>
{
    while (!stop.IsCancellationRequested)
    {
        GC.Collect(2, GCCollectionMode.Forced, blocking: true);
        Interlocked.Increment(ref collections);
        Thread.Sleep(1); // one every millisecond or so, not one that never lets the others run
    }
});
collector.Start();
int wrong = 0;
var vcpus = Enumerable.Range(0, 2).Select(v => new Thread(() =>
{
    var random = new Random(v);
    for (int i = 0; i < 1000; i++)
    {
        long pfn = random.NextInt64(ram.PageCount);
        long gpa = (pfn << PageGeometry.PageShift) + 17;
        byte b = guarded ? memory.ReadByte(gpa) : ReadUnguarded(ram, gpa);
        if (b != (byte)(pfn * 7))
        {
            Interlocked.Increment(ref wrong);
        }
    }
})).ToList();
vcpus.ForEach(t => t.Start());
vcpus.ForEach(t => t.Join());
stop.Cancel();
collector.Join();
Console.WriteLine($"reads done: collections {Interlocked.Read(ref collections)}, faults {postcopy.Faults}, " +
    $"pages asked {postcopy.PagesRequested}, wrong bytes {wrong}");
return wrong == 0 ? 0 : 2;

static unsafe byte ReadUnguarded(GuestRam ram, long gpa) => ram.BasePointer[gpa];
