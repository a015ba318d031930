//! A meshdns process's life: the async runtime, shutdown on SIGTERM or
//! Ctrl-C, and its exit: one error line (with its causes), never a
//! backtrace, since errors name the flag or field to fix.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `body` on a multi-threaded runtime and turns its result into the
/// exit code: `Err` prints `{name}: error: {e:#}` to stderr. Tasks still
/// running when `body` returns (connections clients left open, blocked
/// reads) get `linger` to finish, then do not hold the exit.
pub fn main<F, E>(name: &str, linger: Duration, body: impl FnOnce() -> F) -> ExitCode
where
    F: Future<Output = Result<ExitCode, E>>,
    E: Display,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(body());
    runtime.shutdown_timeout(linger);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A token cancelled on the first SIGTERM or Ctrl-C. Call inside the
/// runtime.
pub fn shutdown_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signals.cancel();
    });
    shutdown
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
