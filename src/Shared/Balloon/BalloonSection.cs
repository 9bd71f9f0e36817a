using Google.Protobuf;
using Migration.Shared.Devices;

namespace Migration.Shared.Balloon;

/// <summary>
/// The virtio-balloon's migration section: its <see cref="BalloonState"/> written as a
/// <see cref="VirtioBalloonSection"/> message (proto/devices.proto) and read back with every field checked. Version 1
/// is also protocol version 1's whole device state, so a source of that version needs no translation.
/// </summary>
public static class BalloonSection
{
    public const string Id = "virtio-balloon";

    public const uint Version = 1;

    public static DeviceSection Save(BalloonState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        var message = new VirtioBalloonSection
        {
            HintStatus = (uint)state.HintStatus,
            HintCmdId = state.HintCommandId,
            PoisonVal = state.PoisonVal,
            Features = state.Features,
            TargetPages = (ulong)state.TargetPages,
            ActualPages = (ulong)state.ActualPages,
            Held = ByteString.CopyFrom(BalloonState.HeldToBytes(state.Held)),
            StatsPollingSeconds = (uint)state.StatsPollingSeconds,
            ReportingDiscarded = ByteString.CopyFrom(BalloonState.HeldToBytes(state.Discarded)),
        };
        return new DeviceSection(Id, Version, message.ToByteArray());
    }

    /// <summary>
    /// The state in <paramref name="section"/>, for a guest of <paramref name="ramPages"/> pages; throws
    /// <see cref="InvalidDataException"/> naming the section for another device's section, a version this build does
    /// not read, bytes that do not parse, or ranges outside guest RAM. Whether the state fits the guest's
    /// configuration is the machine's check.
    /// </summary>
    public static BalloonState Load(DeviceSection section, long ramPages)
    {
        ArgumentNullException.ThrowIfNull(section);
        if (section.Id != Id)
        {
            throw section.Refused($"not the {Id} section");
        }

        if (section.Version != Version)
        {
            throw section.Refused($"this build reads version {Version} only");
        }

        try
        {
            var message = VirtioBalloonSection.Parser.ParseFrom(section.Data.Span);
            return new BalloonState((HintStatus)message.HintStatus, message.HintCmdId, message.PoisonVal,
                message.Features)
            {
                TargetPages = (long)Math.Min(message.TargetPages, long.MaxValue),
                ActualPages = (long)Math.Min(message.ActualPages, long.MaxValue),
                Held = BalloonState.HeldFromBytes(message.Held.Span, ramPages),
                StatsPollingSeconds = (int)Math.Min(message.StatsPollingSeconds, int.MaxValue),
                Discarded = BalloonState.HeldFromBytes(message.ReportingDiscarded.Span, ramPages),
            };
        }
        catch (Exception ex) when (ex is InvalidProtocolBufferException or InvalidDataException)
        {
            throw section.Refused(ex.Message);
        }
    }
}
