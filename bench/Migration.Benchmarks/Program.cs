using BenchmarkDotNet.Running;

// Micro-benchmarks of the guest model's hot paths. Run all:
// dotnet run -c Release --project bench/Migration.Benchmarks -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
