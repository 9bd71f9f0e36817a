using Migration.Shared.Balloon;
using Migration.Shared.Devices;
using Migration.Shared.Machine;
using static Migration.Shared.Tests.Balloon.BalloonSteps;

namespace Migration.Shared.Tests.Machine;

/// <summary>
/// The machine hands each section to the device that owns it, and refuses a set of sections it cannot rebuild from,
/// naming the section, before it builds anything: the RAM it was given is left as it was.
/// </summary>
public sealed class DeviceSectionsTests
{
    private static readonly GuestConfig Config = new() { RamBytes = 16L << 20, Vcpus = 1, PoisonValue = 0x5a };

    [Fact]
    public void SavedSections_RestoreTheDevices()
    {
        using var source = VirtualMachine.Boot(Config);
        source.Balloon.SetTargetPages(100);
        source.HintDevice.Restore(HintStatus.Done, HintCommandId.Min + 0x1234);
        var sections = source.SaveDevices();
        Assert.Equal(VirtualMachine.DeviceSectionIds, sections.Select(s => s.Id));

        using var target = VirtualMachine.Restore(Config, Copy(source.Ram), source.SaveVcpuStates(), sections);
        Assert.Equal(100, target.Balloon.TargetPages);
        Assert.Equal((HintStatus.Done, HintCommandId.Min + 0x1234), target.HintDevice.SavedState);
        Assert.Equal(sections.Select(s => s.Data.ToArray()), target.SaveDevices().Select(s => s.Data.ToArray()));
    }

    [Fact]
    public void AnUnknownSection_IsRefusedNamingIt()
    {
        using var source = VirtualMachine.Boot(Config);
        var ex = Refused(source, [.. source.SaveDevices(), new DeviceSection("virtio-net", 3, new byte[] { 1 })]);
        Assert.StartsWith("device section 'virtio-net' version 3:", ex.Message, StringComparison.Ordinal);
        Assert.Contains("no device of this machine owns it", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ASectionTwice_IsRefusedNamingIt()
    {
        using var source = VirtualMachine.Boot(Config);
        var ex = Refused(source, [.. source.SaveDevices(), .. source.SaveDevices()]);
        Assert.StartsWith("device section 'virtio-balloon'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("twice", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AMissingSection_IsRefusedNamingIt()
    {
        using var source = VirtualMachine.Boot(Config);
        var ex = Refused(source, []);
        Assert.Contains("'virtio-balloon' is missing", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ASectionMadeForAnotherGuest_IsRefusedNamingIt()
    {
        // Same device, readable bytes, but negotiated for a guest that does not poison its free pages.
        using var other = VirtualMachine.Boot(Config with { PoisonValue = null });
        using var source = VirtualMachine.Boot(Config);
        var ex = Refused(source, other.SaveDevices());
        Assert.StartsWith("device section 'virtio-balloon' version 1:", ex.Message, StringComparison.Ordinal);
        Assert.Contains("does not match the guest configuration", ex.Message, StringComparison.Ordinal);
    }

    /// <summary>Restores from <paramref name="sections"/>, expecting a refusal that leaves the RAM as it was.</summary>
    private static InvalidDataException Refused(VirtualMachine source, IReadOnlyList<DeviceSection> sections)
    {
        using var ram = Copy(source.Ram);
        var before = TestSupport.Hashing.Of(ram);
        var ex = Assert.Throws<InvalidDataException>(() =>
            VirtualMachine.Restore(Config, ram, source.SaveVcpuStates(), sections));
        Assert.Equal(before, TestSupport.Hashing.Of(ram));
        return ex;
    }
}
