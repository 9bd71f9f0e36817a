using System.CommandLine;
using Migration.Shared.Cli;
using Migration.Source.Cli;

// Exit codes: 0 = completed and verified, 1 = migration failed or was cancelled, 2 = bad usage.
var root = new RootCommand("Live-migration source: hosts a simulated VM and migrates it over gRPC.")
{
    MigrateCommand.Create(),
    DemoCommand.Create(),
    RunCommand.Create(),
    CtlCommand.Create(),
};
return await UsageErrors.ParseAndRunAsync(root, args);
