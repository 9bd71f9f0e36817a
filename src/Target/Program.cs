using Migration.Shared.Cli;
using Migration.Target.Cli;

// Exit codes: 0 = stopped normally, 1 = could not listen, 2 = bad usage.
return await UsageErrors.ParseAndRunAsync(TargetCommand.Create(), args);
