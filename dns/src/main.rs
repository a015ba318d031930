//! `meshdns`: the registry and authoritative DNS server (`serve`), and the
//! embedded demo fleet (`demo`).

#![warn(clippy::expect_used)]

use clap::{Parser, Subcommand};
use meshdns::check::CheckArgs;
use meshdns::config::ServeArgs;
use meshdns::demo::DemoArgs;
use meshdns::drill::DrillArgs;
use meshdns::status::StatusArgs;
use meshdns_cli::{logs, process};

/// mimalloc: snapshot rebuilds allocate and free many mid-sized vectors;
/// glibc's malloc spent a third of a rebuild consolidating and unlinking
/// chunks (perf, benches/README.md), and held more memory per endpoint.
/// (`--features system-allocator` leaves it out, for heap profilers.)
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Cross-cluster service discovery: the registry and its DNS server.
#[derive(Debug, Parser)]
#[command(name = "meshdns", version, about)]
struct Cli {
    /// Log format: text or json.
    #[arg(
        long = "log-format",
        env = "MESHDNS_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the registry (gRPC), authoritative DNS (UDP and TCP) and admin HTTP.
    Serve(Box<ServeArgs>),
    /// Run a registry with three simulated clusters on loopback.
    Demo(DemoArgs),
    /// Show the clusters a registry knows, or one service's endpoints.
    Status(StatusArgs),
    /// Check a fleet from here: registry, credentials, DNS, locality, CIDRs, liveness, versions; exit 1 on a failure.
    Check(Box<CheckArgs>),
    /// A disaster-recovery drill, changing no answer: lose clusters, zones, regions or providers on paper and see where each service would be served from.
    Drill(Box<DrillArgs>),
}

/// Errors are printed as one line (with their causes), never as a
/// backtrace: they name the flag or field to fix. `serve` returns within
/// --shutdown-timeout; connections it left open (clients that never said
/// goodbye) and blocked reads must not hold the exit.
fn main() -> std::process::ExitCode {
    huge_pages_off();
    process::main("meshdns", std::time::Duration::from_millis(500), run)
}

/// No transparent huge pages for this process. The kernel backs any
/// aligned anonymous region with 2 MiB pages when THP is `always`, so a
/// few live objects keep a whole huge page resident and every fresh one is
/// zeroed whole: after a reconnect storm of 1,000 clusters the hub held
/// ~10% more memory with them, and spent more of the storm's CPU in page
/// faults (benches/README.md, "Fleet scale, sixth session"). Best effort:
/// a kernel without the flag leaves things as they were.
fn huge_pages_off() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("meshdns: could not turn transparent huge pages off: {e}");
    }
}

async fn run() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let shutdown = process::shutdown_on_signal();
    match cli.command {
        Command::Serve(args) => {
            logs::init(&cli.log_format, "info")?;
            let config = args.config()?;
            let listeners = meshdns::Listeners::bind(
                &args.dns_listen,
                args.grpc_listen,
                args.admin_listen,
                args.udp_sockets(),
            )
            .await?;
            meshdns::serve(config, listeners, shutdown).await?;
        }
        Command::Status(args) => {
            logs::init(&cli.log_format, "warn")?;
            print!("{}", meshdns::status::run(&args).await?);
        }
        Command::Demo(args) => {
            // The demo prints its own guide; keep the log to warnings.
            logs::init(&cli.log_format, "warn")?;
            meshdns::demo::run(args, shutdown).await?;
        }
        Command::Drill(args) => {
            logs::init(&cli.log_format, "warn")?;
            print!("{}", meshdns::drill::run(&args).await?);
        }
        Command::Check(args) => {
            logs::init(&cli.log_format, "error")?;
            let report = meshdns::check::run(&args).await?;
            print!("{}", report.render(args.output == "json"));
            if report.failed() {
                return Ok(std::process::ExitCode::from(1));
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
