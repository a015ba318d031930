//! `meshdns-syncer`: exports one cluster's services to the registries.

use clap::Parser;
use meshdns_cli::{logs, process};
use meshdns_syncer::config::SyncerArgs;

/// Errors are printed as one line (with their causes), never as a
/// backtrace: they name the flag or field to fix.
fn main() -> std::process::ExitCode {
    process::main("meshdns-syncer", std::time::Duration::from_millis(500), run)
}

async fn run() -> anyhow::Result<std::process::ExitCode> {
    let args = SyncerArgs::parse();
    logs::init(&args.log_format, "info")?;
    let shutdown = process::shutdown_on_signal();
    meshdns_syncer::run(args, shutdown).await?;
    Ok(std::process::ExitCode::SUCCESS)
}
