using System.Text;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;
using Migration.Shared.Transport;
using Migration.Shared.Verification;
using DeviceSection = Migration.Shared.Devices.DeviceSection;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// A source's messages written by hand, for tests that change one piece of what a source sends: Begin for a VM, and
/// every page of its RAM as raw batches of one round.
/// </summary>
internal static class HandDrivenSource
{
    public static BeginRequest Begin(VirtualMachine vm, string id, string configJson) => new()
    {
        MigrationId = id,
        ProtocolVersion = ProtocolVersions.Current,
        RamBytes = (ulong)vm.Config.RamBytes,
        PageSize = PageGeometry.PageSize,
        Vcpus = (uint)vm.Config.Vcpus,
        GuestConfigJson = configJson,
    };

    /// <summary>
    /// The state digest a source sends: over the configuration as Begin carried it, the vCPU states and every device
    /// section (<see cref="MigrationStateDigest.Compute"/>).
    /// </summary>
    public static ulong StateDigest(string configJson, IEnumerable<byte[]> vcpus, IEnumerable<DeviceSection> devices) =>
        MigrationStateDigest.Compute(Encoding.UTF8.GetBytes(configJson), vcpus.Select(v => (ReadOnlyMemory<byte>)v),
            devices);

    /// <summary>Puts the vCPU states and the device sections on <paramref name="complete"/>, as they go on the wire.</summary>
    public static void AddState(CompleteRequest complete, IEnumerable<byte[]> vcpus, IEnumerable<DeviceSection> devices)
    {
        complete.VcpuStates.AddRange(vcpus.Select(v => ByteString.CopyFrom(v)));
        complete.DeviceSections.AddRange(devices.Select(DeviceSectionWire.ToWire));
    }

    /// <summary>Sends all of <paramref name="ram"/> on one page stream, 256 pages a batch, and closes it.</summary>
    public static async Task SendAllPagesAsync(GrpcChannel channel, Metadata headers, GuestRam ram, uint round)
    {
        using var stream = new PageStream.PageStreamClient(channel).SendPages(headers);
        for (long first = 0; first < ram.PageCount; first += 256)
        {
            await stream.RequestStream.WriteAsync(Batch(ram, first, (int)Math.Min(256, ram.PageCount - first), round));
        }

        await stream.RequestStream.CompleteAsync();
        await stream.ResponseAsync;
    }

    private static PageBatch Batch(GuestRam ram, long first, int count, uint round)
    {
        var batch = new PageBatch { Round = round };
        var payload = new MemoryStream();
        var buffer = new byte[PageCodec.MaxEncodedLength];
        for (long p = first; p < first + count; p++)
        {
            var (kind, length) = PageCodec.Encode(ram.Page(p), buffer, compress: false);
            batch.Pfns.Add((ulong)p);
            batch.Encodings.Add((PageEncoding)(int)kind);
            batch.Lengths.Add((uint)length);
            payload.Write(buffer, 0, length);
        }

        batch.Payload = ByteString.CopyFrom(payload.ToArray());
        return batch;
    }
}
