using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Precopy;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R3: the first command id goes out before dirty logging is on. From the setup hook that runs before the engine turns
/// logging on, the participants join and a first id is issued (logging is switched on and off around the join, to get
/// past the device's own H1 check, the second line of defence); the rest of setup then takes a while, during which
/// hints clear pages whose writes nothing logs.
/// </summary>
public sealed class R03HintBeforeLogging : Mutant
{
    public override string Race => "R3";

    public override FuzzProfile Profile => FuzzProfile.EagerNoAck;

    internal override EngineSeams Engine(EngineSeams seams) => seams with
    {
        BeforeLoggingEnabled = (setup, participants) =>
        {
            var log = setup.Bitmap.Log;
            log.Enable();
            foreach (var participant in participants)
            {
                if (participant.Setup(setup))
                {
                    participant.AfterSync(vmRunning: true);
                }
            }

            log.Disable();
            for (int i = 0; i < 16; i++)
            {
                setup.Bitmap.Scheduling.Preempt(); // the rest of setup takes a while: the window the bug opens
            }
        },
    };
}
