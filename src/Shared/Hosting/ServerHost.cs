using Microsoft.AspNetCore.Builder;

namespace Migration.Shared.Hosting;

/// <summary>
/// How both programs start their Kestrel hosts (the target's server, the source's management API).
/// </summary>
internal static class ServerHost
{
    /// <summary>
    /// A slim builder whose configuration is read once and never watched, rooted where the program lies. By default
    /// the host watches its content root (the working directory) for changed settings files, which on Linux walks and
    /// watches every directory under it: a target started in a source tree spent 2% of its CPU during a migration
    /// on that watcher's thread.
    /// </summary>
    public static WebApplicationBuilder CreateBuilder() => WebApplication.CreateSlimBuilder(new WebApplicationOptions
    {
        Args = ["--hostBuilder:reloadConfigOnChange=false"],
        ContentRootPath = AppContext.BaseDirectory,
    });
}
