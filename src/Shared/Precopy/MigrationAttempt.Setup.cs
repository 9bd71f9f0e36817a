using Migration.Protocol;
using Migration.Shared.Devices;
using Migration.Shared.Guest;
using Migration.Shared.Protocol;
using Migration.Shared.Transport;

namespace Migration.Shared.Precopy;

internal sealed partial class MigrationAttempt
{
    /// <summary>
    /// Begin, one stream per channel, every page marked to send, dirty logging on, then the participants join and the
    /// setup sync runs (H1: logging is on before any participant can issue a command id; the setup sync is wrapped
    /// like every other, so hinting starts at once). The switchover's first rehearsal starts as setup ends and runs
    /// beside round 0 (<see cref="StartWarmUpRehearsal"/>).
    /// </summary>
    private async Task SetupAsync(CancellationToken ct)
    {
        var timer = new PhaseTimer(_time, _report.Timing.SetupPhasesMs);
        var begun = await BeginAsync(ct).ConfigureAwait(false);
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
        _rehearses = speaksResumeFirst; // a target that takes rehearsals
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
        StartWarmUpRehearsal(ct);
    }

    /// <summary>
    /// The first rehearsal pays for first-call code on both sides (a fresh process's first state save, stream and
    /// Complete, and the target's first rebuild: 50-200 ms against a few ms warm), so its figures were never counted.
    /// It runs beside round 0 rather than before it, on the thread pool; the counted ones follow round 0
    /// (<see cref="FirstRehearsalsAsync"/>), as quiet as every later rehearsal, before the first decision needs them.
    /// </summary>
    private void StartWarmUpRehearsal(CancellationToken ct)
    {
        if (_rehearses)
        {
            _warmUp = Task.Run(() => RehearseSwitchoverAsync(unrecorded: 1, samples: 0, ct), ct);
        }
    }

    /// <summary>
    /// After round 0's pages are out: waits for the warm-up rehearsal, then takes the
    /// <see cref="FirstCountedRehearsals"/> counted ones, so the first decision has the estimate setup used to measure.
    /// The wait is recorded (<c>timing.firstRehearsalsMs</c>). Nothing after the first round.
    /// </summary>
    private async Task FirstRehearsalsAsync(CancellationToken ct)
    {
        if (_warmUp is not { } warmUp)
        {
            return;
        }

        long start = _time.GetTimestamp();
        _warmUp = null;
        await warmUp.ConfigureAwait(false);
        await RehearseSwitchoverAsync(unrecorded: 0, samples: FirstCountedRehearsals, ct).ConfigureAwait(false);
        _report.Timing.FirstRehearsalsMs = _time.GetElapsedTime(start).TotalMilliseconds;
    }

    /// <summary>
    /// A failed attempt waits for the warm-up rehearsal (cancelled with it) before it tells the target: nothing of the
    /// attempt is left running, and what became of the rehearsal adds nothing to the failure already explained.
    /// </summary>
    private async Task SettleWarmUpAsync()
    {
        if (_warmUp is not { } warmUp)
        {
            return;
        }

        _warmUp = null;
        try
        {
            await warmUp.ConfigureAwait(false);
        }
#pragma warning disable CA1031 // the attempt already failed for its own reason
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    /// <summary>
    /// Runs the switchover's fixed steps before the downtime, on both sides, and records what they cost
    /// (<see cref="SwitchoverCost"/>): the state saved and digested as the completion carries it, an empty page stream
    /// opened and closed on the first channel's connection, and a rehearsal Complete, for which the target rebuilds
    /// and starts a scratch guest of this guest's shape and keeps it running until its reply is out. Nothing of the
    /// migration changes on either side. <paramref name="samples"/> rehearsals are recorded after
    /// <paramref name="unrecorded"/> that pay for first-call code.
    /// </summary>
    private async Task RehearseSwitchoverAsync(int unrecorded, int samples, CancellationToken ct)
    {
        for (int i = 0; i < unrecorded + samples; i++)
        {
            long start = _time.GetTimestamp();
            var rehearsal = BuildCompletion(finalRound: 0, rehearsal: true);
            double saveMs = _time.GetElapsedTime(start).TotalMilliseconds;
            var close = await _channels[0].RehearseCloseAsync(ct).ConfigureAwait(false);
            var complete = await _transport.RehearseCompleteAsync(rehearsal, ct).ConfigureAwait(false);
            if (i >= unrecorded)
            {
                _cost.Add(new SwitchoverCost.Rehearsal(saveMs, close.TotalMilliseconds, complete.TotalMilliseconds));
            }
        }

        if (samples > 0)
        {
            PrecopyLog.SwitchoverRehearsed(_log, _id, _cost.ToString());
        }
    }

    /// <summary>
    /// Begin, which a cancel does not cut short: the target may have taken it already, and only the migration's key
    /// lets the Cancel that follows free the target at once (a keyless Cancel is refused, and the target would stay
    /// busy for its whole lease). The transport proposes the key in Begin, so it holds it either way; a target that
    /// ignores the proposal answers with its own, which only the reply brings, so on a cancel the reply is still
    /// awaited for up to <see cref="BeginGrace"/>, then the cancel goes on. The call is bounded by its own deadline.
    /// </summary>
    private async Task<BeginReply> BeginAsync(CancellationToken ct)
    {
        var begin = _transport.BeginAsync(BeginRequest(), CancellationToken.None);
        try
        {
            return await begin.WaitAsync(ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            try
            {
                await begin.WaitAsync(BeginGrace, _time, CancellationToken.None).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // whatever became of Begin, the cancel goes on; the failure path tells the target
            catch (Exception)
#pragma warning restore CA1031
            {
            }

            throw;
        }
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
            ProtocolVersion = ProtocolVersions.Current, // the completion carries device sections (version 2)
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
