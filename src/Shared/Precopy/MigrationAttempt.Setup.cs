using Google.Protobuf;
using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Protocol;

namespace Migration.Shared.Precopy;

internal sealed partial class MigrationAttempt
{
    /// <summary>
    /// Begin, one stream per channel, every page marked to send, dirty logging on, then the participants join and the
    /// setup sync runs (H1: logging is on before any participant can issue a command id; the setup sync is wrapped
    /// like every other, so hinting starts at once).
    /// </summary>
    private async Task SetupAsync(CancellationToken ct)
    {
        var timer = new PhaseTimer(_time, _report.Timing.SetupPhasesMs);
        var begun = await _transport.BeginAsync(BeginRequest(), ct).ConfigureAwait(false);
        _targetInstance = begun.InstanceId;
        _maxMessageBytes = begun.MaxMessageBytes;
        bool speaksResumeFirst = begun.Features.Contains(WireNames.ResumeFirstFeature);
        // With a poison value the target must see its free pages hold it (R12), which reads its RAM before the guest
        // runs: such guests verify first.
        _resumeFirst = _options.ResumeFirst && speaksResumeFirst && _vm.Config.PoisonValue is null;
        timer.Next("begin");
        for (int i = 0; i < _options.Channels; i++)
        {
            _channels.Add(_transport.OpenChannel(_id, _streams.Token));
        }

        timer.Next("openChannels");
        if (speaksResumeFirst)
        {
            await RehearseSwitchoverAsync(ct).ConfigureAwait(false);
            timer.Next("rehearsal");
        }
        _bitmap.SetAll();
        var setup = new PrecopySetup(_bitmap, new MigrationCapabilities
        {
            FreePageHinting = _options.Hints,
            SkipBallooned = _options.SkipBallooned,
            SkipDiscarded = _options.SkipDiscarded,
        });
        _seams.BeforeLoggingEnabled?.Invoke(setup, _participants);
        _vm.DirtyLog.Enable();
        foreach (var participant in _participants)
        {
            if (participant.Setup(setup))
            {
                _joined.Add(participant);
            }
        }

        PrecopyLog.ParticipantsJoined(_log, _id, _joined.Count);
        _sync = new DirtySync(_bitmap, _joined, _points);
        timer.Next("startLogging");
        _sync.Run(vmRunning: true);
        _stats = new RoundStats(_vm.DirtyLog.PagesLogged, _time.GetTimestamp());
        timer.Next("setupSync");
        _report.Timing.SetupMs = _time.GetElapsedTime(_start).TotalMilliseconds;
    }

    /// <summary>
    /// Runs the switchover's calls once before the downtime, on both sides: an empty page stream opened and closed on
    /// the first channel's connection, and a rehearsal Complete (which changes nothing); twice, since the first pays
    /// for first-call code. The faster pair is the switchover's fixed cost in the expected downtime, capped at a
    /// quarter of the downtime limit so that a slow sample (a loaded machine, a pause in setup) cannot keep precopy
    /// from stopping.
    /// </summary>
    private async Task RehearseSwitchoverAsync(CancellationToken ct)
    {
        var rehearsal = new CompleteRequest
        {
            MigrationId = _id,
            Device = new DeviceState(),
            Rehearsal = true,
            ResumeFirst = _resumeFirst,
        };
        rehearsal.VcpuStates.Add(ByteString.CopyFrom(new byte[64]));
        double fixedMs = double.MaxValue;
        for (int i = 0; i < 2; i++)
        {
            var close = await _channels[0].RehearseCloseAsync(ct).ConfigureAwait(false);
            var complete = await _transport.RehearseCompleteAsync(rehearsal, ct).ConfigureAwait(false);
            fixedMs = Math.Min(fixedMs, (close + complete).TotalMilliseconds);
        }

        _fixedSwitchoverMs = Math.Min(fixedMs, _options.DowntimeLimit.TotalMilliseconds / 4);
    }

    private BeginRequest BeginRequest()
    {
        var config = _vm.Config;
        var request = new BeginRequest
        {
            MigrationId = _id,
            RamBytes = (ulong)config.RamBytes,
            PageSize = PageGeometry.PageSize,
            Vcpus = (uint)config.Vcpus,
            GuestConfigJson = _configJson,
            Channels = (uint)_options.Channels,
        };
        request.Features.Add(WireNames.RoundTagsFeature);
        if (_options.Hints)
        {
            request.Features.Add(WireNames.FreePageHintFeature);
        }

        if (_options.Compression == Compression.Lz4)
        {
            request.Features.Add(WireNames.Lz4Feature);
        }

        return request;
    }
}
