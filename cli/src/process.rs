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
/// runtime. The handlers are installed before this returns, not when the
/// task that waits on them first runs: on a busy runtime that can be
/// after the process is serving, and a SIGTERM in between (a pod deleted
/// as it starts) would end it by the signal's default action, with no
/// drain and no state file saved.
pub fn shutdown_on_signal() -> CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    // A signal that cannot be installed is not waited for.
    let mut term = signal(SignalKind::terminate()).ok();
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    tokio::spawn(async move {
        tokio::select! {
            _ = received(&mut term) => {}
            _ = received(&mut interrupt) => {}
        }
        signals.cancel();
    });
    shutdown
}

/// Waits for the signal, forever if it is not installed.
async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SIGTERM that arrives before the runtime has run the waiting task
    /// (here: before this single thread yields once) cancels the token; it
    /// does not end the process. With the handler installed by the task,
    /// the signal's default action kills this test's process.
    #[test]
    fn a_sigterm_before_the_task_runs_is_caught() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let shutdown = shutdown_on_signal();
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &std::process::id().to_string()])
                .status()
                .expect("kill(1) runs");
            assert!(sent.success());
            tokio::time::timeout(Duration::from_secs(10), shutdown.cancelled())
                .await
                .expect("the token is cancelled by the SIGTERM");
        });
    }
}
