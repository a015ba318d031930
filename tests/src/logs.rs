//! A child process's output, kept line by line (and echoed with
//! `MESHDNS_TEST_LOG`), so a test can wait for a line: above all the
//! `... listening addr=` lines of a process started on port 0, which is
//! how tests learn its ports without a free-port race.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines read so far from a child's stdout or stderr.
#[derive(Debug, Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<String>>>);

/// `text` without ANSI colour sequences.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Logs {
    /// Reads `stream` on a thread until it closes.
    pub fn capture(stream: impl std::io::Read + Send + 'static) -> Logs {
        let logs = Logs::default();
        let lines = logs.0.clone();
        let echo = std::env::var_os("MESHDNS_TEST_LOG").is_some();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if echo {
                    eprintln!("{line}");
                }
                lines.lock().unwrap().push(plain(&line));
            }
        });
        logs
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    /// Lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits up to `limit` for a line `find` accepts.
    pub async fn wait<T>(
        &self,
        limit: Duration,
        what: &str,
        find: impl Fn(&str) -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(found) = self.0.lock().unwrap().iter().find_map(|l| find(l)) {
                return found;
            }
            assert!(
                started.elapsed() < limit,
                "no {what} within {limit:?}; output:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address of the first `<message> ... addr=<address>` line: where
    /// a process started on port 0 is listening.
    pub async fn listening(&self, message: &str) -> SocketAddr {
        self.wait(Duration::from_secs(20), message, |line| {
            listening_addr(line, message)
        })
        .await
    }
}

/// The address a `<message> ... addr=<address>` log line names.
pub fn listening_addr(line: &str, message: &str) -> Option<SocketAddr> {
    let line = plain(line);
    let rest = &line[line.find(message)? + message.len()..];
    let addr = rest
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))?;
    addr.parse().ok()
}

/// [`Logs::listening`] for a process that logs to the file at `path`.
pub async fn listening_in_file(path: &std::path::Path, message: &str) -> SocketAddr {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| listening_addr(l, message)) {
            return addr;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no {message} in {} within 20s:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_addresses_with_or_without_colour() {
        let text = "2026-01-01T00:00:00Z  INFO meshdns: grpc registry listening addr=127.0.0.1:4321 tls=false\n\
                    \u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m meshdns_syncer: admin listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:99\n";
        let logs = Logs::capture(std::io::Cursor::new(text.as_bytes().to_vec()));
        assert_eq!(
            logs.listening("grpc registry listening").await,
            "127.0.0.1:4321".parse().unwrap()
        );
        assert_eq!(
            logs.listening("admin listening").await,
            "127.0.0.1:99".parse().unwrap()
        );
    }
}
