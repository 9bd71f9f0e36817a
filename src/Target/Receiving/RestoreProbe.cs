using System.Collections.Concurrent;
using System.Diagnostics;
using Migration.Shared.Devices;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;

namespace Migration.Target.Receiving;

/// <summary>
/// What the target's half of a switchover costs on this machine now, measured while precopy still runs: a rehearsal
/// restores a small scratch guest with the migrating guest's vCPUs and workload (the same rebuild code a real
/// switchover runs, none of whose cost grows with RAM), starts it, and keeps it running until the rehearsal's reply has
/// gone out, as the migrated guest runs while the real reply goes out. The source's rehearsal round trip then carries
/// the rebuild, the resume and the guest's first moments beside the reply, so its downtime estimate sees them; each
/// rehearsal measures anew, so the estimate follows the machine's load.
/// </summary>
/// <remarks>
/// Its resume takes spare threads as the real one does (<see cref="VirtualMachine.ReserveThreads"/>). The scratch guest
/// is booted once per vCPU count and workload kind per process (<see cref="TryPrepare"/>, at Begin, not
/// in any measured call), and the RAM copy a rebuild takes is made before the call that uses it, so neither is counted.
/// </remarks>
internal sealed class RestoreProbe : IDisposable
{
    /// <summary>The scratch guest's RAM: the smallest a guest with a page cache and a working set boots in.</summary>
    private const long ScratchRamBytes = 16L << 20;

    private static readonly ConcurrentDictionary<(int Vcpus, WorkloadKind Kind), Image> Images = new();

    private readonly Image _image;
    private readonly GuestConfig _migrated;
    private readonly object _lock = new();
    private GuestRam? _ready;
    private bool _disposed;

    private RestoreProbe(Image image, GuestConfig migrated)
    {
        _image = image;
        _migrated = migrated;
        _ready = image.Copy();
    }

    /// <summary>
    /// A probe for a guest of <paramref name="migrated"/>'s shape, its first RAM copy made; null when no scratch guest
    /// of that shape boots (rehearsals then time the round trip alone).
    /// </summary>
    public static RestoreProbe? TryPrepare(GuestConfig migrated)
    {
        ArgumentNullException.ThrowIfNull(migrated);
        try
        {
            var image = Images.GetOrAdd((migrated.Vcpus, migrated.Workload.Kind), static key => Image.Boot(key));
            return new RestoreProbe(image, migrated);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or OutOfMemoryException)
        {
            return null;
        }
    }

    /// <summary>
    /// Rebuilds and starts the scratch guest; returns it running with the two phases' times. Dispose the run once the
    /// reply is out: that stops the guest and makes the next RAM copy.
    /// </summary>
    public Run Start()
    {
        GuestRam ram;
        lock (_lock)
        {
            ram = _ready ?? _image.Copy(); // two rehearsals at once (a confused source): the second pays for a copy
            _ready = null;
        }

        long start = Stopwatch.GetTimestamp();
        var vm = VirtualMachine.Restore(_image.Config, ram, _image.VcpuStates, _image.Devices);
        double restoreMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        long resume = Stopwatch.GetTimestamp();
        vm.Start();
        double resumeMs = Stopwatch.GetElapsedTime(resume).TotalMilliseconds;
        return new Run(this, vm, restoreMs, resumeMs);
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            _ready?.Dispose();
            _ready = null;
        }
    }

    /// <summary>
    /// After a rehearsal's reply: the spare threads the scratch guest took are replaced (for the migrating guest's
    /// resume) and the next RAM copy is made, neither inside a measured call.
    /// </summary>
    private void Refill()
    {
        VirtualMachine.ReserveThreads(_migrated);
        lock (_lock)
        {
            if (_disposed || _ready is not null)
            {
                return;
            }
        }

        var copy = _image.Copy();
        lock (_lock)
        {
            if (!_disposed && _ready is null)
            {
                _ready = copy;
                return;
            }
        }

        copy.Dispose();
    }

    /// <summary>A scratch guest running since a rehearsal rebuilt it.</summary>
    internal sealed class Run(RestoreProbe probe, VirtualMachine vm, double restoreMs, double resumeMs) : IDisposable
    {
        private int _disposed;

        public double RestoreMs { get; } = restoreMs;

        public double ResumeMs { get; } = resumeMs;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                vm.Dispose();
                probe.Refill();
            }
        }
    }

    /// <summary>A booted, warm scratch guest saved as a migration would carry it.</summary>
    private sealed record Image(GuestConfig Config, byte[] Ram, IReadOnlyList<byte[]> VcpuStates,
        IReadOnlyList<DeviceSection> Devices)
    {
        public static Image Boot((int Vcpus, WorkloadKind Kind) key)
        {
            var config = new GuestConfig
            {
                RamBytes = ScratchRamBytes,
                Vcpus = key.Vcpus,
                Workload = new WorkloadOptions { Kind = key.Kind, AbMib = 2, PageFaultRegionMib = 2 },
            };
            using var vm = VirtualMachine.Boot(config);
            return new Image(config, vm.Ram.Pages(0, (int)vm.Ram.PageCount).ToArray(), vm.SaveVcpuStates(),
                vm.SaveDevices());
        }

        public GuestRam Copy()
        {
            var ram = GuestRam.Allocate(Ram.LongLength);
            Ram.CopyTo(ram.Pages(0, (int)ram.PageCount));
            return ram;
        }
    }
}
