//! `meshdns demo` as a process, every listener on port 0, with the
//! addresses it prints.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::logs::Logs;
use crate::{LOOPBACK_PORT_0, Proc, bin};

/// A running `meshdns demo`: stopped (SIGKILL) when dropped, or by
/// [`Proc::terminate`] on `proc`.
#[derive(Debug)]
pub struct DemoProc {
    pub proc: Proc,
    /// What the demo printed on stdout (its addresses and dig lines).
    pub printed: Logs,
    /// Its stderr, drained so the demo never blocks on a full pipe.
    pub log: Logs,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
}

impl DemoProc {
    /// Starts `meshdns demo --dir DIR` with `extra` flags and waits for
    /// the DNS and admin addresses it prints.
    pub async fn start(dir: &Path, extra: &[&str]) -> Self {
        let dir = dir.display().to_string();
        let mut proc = Proc::spawn(
            std::process::Command::new(bin("meshdns"))
                .arg("demo")
                .args(LOOPBACK_PORT_0)
                .args(["--dir", &dir])
                .args(extra),
        );
        let printed = Logs::capture(proc.0.stdout.take().expect("piped stdout"));
        let log = Logs::capture(proc.0.stderr.take().expect("piped stderr"));
        let dns = printed
            .wait(Duration::from_secs(20), "the DNS address", |l| {
                l.trim()
                    .strip_prefix("DNS")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .await;
        let admin = printed
            .wait(Duration::from_secs(5), "the admin address", |l| {
                l.trim()
                    .strip_prefix("admin")?
                    .trim()
                    .strip_prefix("http://")?
                    .split('/')
                    .next()?
                    .parse()
                    .ok()
            })
            .await;
        DemoProc {
            proc,
            printed,
            log,
            dns,
            admin,
        }
    }
}
