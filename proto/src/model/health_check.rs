//! A service's health check, as the `meshdns.io/health-check` annotation,
//! the file source's `healthCheck` field and a registration's
//! `health_check` all write it:
//!
//! ```text
//! tcp:PORT [interval=5s] [timeout=1s] [rise=2] [fall=3]
//! http:PORT/PATH [status=200] [interval=5s] [timeout=1s] [rise=2] [fall=3]
//! ```
//!
//! `PORT` is a number or the name of one of the service's TCP ports (for
//! a registration, of the ports it registers). The target is an exported
//! endpoint's first address with that port; there is no host field. That
//! address is whatever the endpoint's owner declared: for a registration,
//! any address inside the syncer's `--registration-cidrs` — so a
//! registrant can point the checker at any host and TCP port in those
//! ranges (with an HTTP path of its choice), at most once a
//! `MIN_REGISTRANT_INTERVAL` per registration (SECURITY.md). The syncer
//! keeps checks to itself: they are not sent to registries.

use std::fmt;
use std::num::NonZeroU16;
use std::time::Duration;

use super::PortName;
use crate::duration;
use crate::error::{InvalidField, Problem};

/// Shortest check interval: a check is a connection to someone's VM.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest check interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest timeout.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest timeout (a permit of the checker is held this long at most).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest interval of a check a registrant declares (an operator's
/// annotation may go down to [`MIN_INTERVAL`]).
pub const MIN_REGISTRANT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest check text (the whole annotation or field).
pub const MAX_TEXT_LEN: usize = 512;
/// Highest `rise` or `fall`.
pub const MAX_THRESHOLD: u8 = 10;
/// Longest HTTP path.
pub const MAX_PATH_LEN: usize = 256;

/// Which port of the endpoint a check connects to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckPort {
    /// A port number (1-65535).
    Number(NonZeroU16),
    /// A port of the service by name; resolved when the check is attached.
    Name(PortName),
}

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    /// Passes when a TCP connection opens.
    Tcp {
        /// The endpoint's port to connect to.
        port: CheckPort,
    },
    /// Passes when `GET path` answers with `status`.
    Http {
        /// The endpoint's port to connect to (plain HTTP/1.1, no TLS).
        port: CheckPort,
        /// The path asked for: starts with `/`, visible ASCII only, at most
        /// [`MAX_PATH_LEN`] bytes.
        path: String,
        /// The HTTP status that passes (100-599; 200 unless told).
        status: u16,
    },
}

/// One service's health check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// What one check does.
    pub probe: Probe,
    /// Time from the start of one check to the next: [`MIN_INTERVAL`] to
    /// [`MAX_INTERVAL`] (5 s unless told).
    pub interval: Duration,
    /// How long one check may take before it fails: [`MIN_TIMEOUT`] to
    /// the interval, at most [`MAX_TIMEOUT`] (1 s unless told).
    pub timeout: Duration,
    /// Passes in a row that bring a failing endpoint back.
    pub rise: u8,
    /// Failures in a row that take a passing endpoint out.
    pub fall: u8,
}

fn bad(field: &str, why: String) -> InvalidField {
    InvalidField::new(field, Problem::BadHealthCheck(why))
}

fn port(text: &str) -> Result<CheckPort, InvalidField> {
    if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        return text
            .parse::<u16>()
            .ok()
            .and_then(NonZeroU16::new)
            .map(CheckPort::Number)
            .ok_or_else(|| bad("port", format!("{text:?} is not a port (1-65535)")));
    }
    PortName::new(text)
        .map(CheckPort::Name)
        .map_err(|e| e.within("port"))
}

fn threshold(field: &str, value: &str) -> Result<u8, InvalidField> {
    match value.parse::<u8>() {
        Ok(n) if (1..=MAX_THRESHOLD).contains(&n) => Ok(n),
        _ => Err(bad(
            field,
            format!("{value:?} is not a count from 1 to {MAX_THRESHOLD}"),
        )),
    }
}

impl HealthCheck {
    /// Parses the syntax above. Errors name the part at fault (`port`,
    /// `path`, `interval`, ...), relative to wherever the text came from.
    pub fn parse(text: &str) -> Result<Self, InvalidField> {
        if text.len() > MAX_TEXT_LEN {
            return Err(bad(
                "kind",
                format!("the check is longer than {MAX_TEXT_LEN} characters"),
            ));
        }
        let mut words = text.split_whitespace();
        let Some(head) = words.next() else {
            return Err(bad("kind", "empty: want tcp:PORT or http:PORT/PATH".into()));
        };
        let (kind, target) = head
            .split_once(':')
            .ok_or_else(|| bad("kind", format!("{head:?}: want tcp:PORT or http:PORT/PATH")))?;
        let mut status = None;
        let mut probe = match kind {
            "tcp" => Probe::Tcp {
                port: port(target)?,
            },
            "http" => {
                let (number, path) = match target.find('/') {
                    Some(at) => target.split_at(at),
                    None => (target, "/"),
                };
                if path.len() > MAX_PATH_LEN {
                    return Err(bad(
                        "path",
                        format!("longer than {MAX_PATH_LEN} characters"),
                    ));
                }
                if !path.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(bad(
                        "path",
                        "only visible ASCII characters are allowed".into(),
                    ));
                }
                Probe::Http {
                    port: port(number)?,
                    path: path.to_owned(),
                    status: 200,
                }
            }
            other => {
                return Err(bad(
                    "kind",
                    format!("{other:?} is not a check kind: use tcp or http"),
                ));
            }
        };
        let mut check = HealthCheck {
            probe: Probe::Tcp {
                port: CheckPort::Number(NonZeroU16::MIN),
            },
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        };
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| bad(word, "want key=value".into()))?;
            let as_duration = |field: &str| duration::parse(value).map_err(|e| bad(field, e));
            match key {
                "interval" => check.interval = as_duration("interval")?,
                "timeout" => check.timeout = as_duration("timeout")?,
                "rise" => check.rise = threshold("rise", value)?,
                "fall" => check.fall = threshold("fall", value)?,
                "status" => match value.parse::<u16>() {
                    Ok(code @ 100..=599) => status = Some(code),
                    _ => {
                        return Err(bad(
                            "status",
                            format!("{value:?} is not an HTTP status (100-599)"),
                        ));
                    }
                },
                other => {
                    return Err(bad(
                        other,
                        "unknown setting: use interval, timeout, rise, fall or status".into(),
                    ));
                }
            }
        }
        match (&mut probe, status) {
            (Probe::Http { status: s, .. }, Some(code)) => *s = code,
            (Probe::Tcp { .. }, Some(_)) => {
                return Err(bad("status", "only http checks have a status".into()));
            }
            _ => {}
        }
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&check.interval) {
            return Err(bad(
                "interval",
                format!("must be from {MIN_INTERVAL:?} to {MAX_INTERVAL:?}"),
            ));
        }
        if check.timeout < MIN_TIMEOUT || check.timeout > check.interval.min(MAX_TIMEOUT) {
            return Err(bad(
                "timeout",
                format!("must be from {MIN_TIMEOUT:?} to the interval, at most {MAX_TIMEOUT:?}"),
            ));
        }
        check.probe = probe;
        Ok(check)
    }

    /// The port the probe connects to.
    pub fn port(&self) -> &CheckPort {
        match &self.probe {
            Probe::Tcp { port } | Probe::Http { port, .. } => port,
        }
    }

    /// The same check with its port given as `number`.
    pub fn with_port(mut self, number: NonZeroU16) -> Self {
        match &mut self.probe {
            Probe::Tcp { port } | Probe::Http { port, .. } => *port = CheckPort::Number(number),
        }
        self
    }
}

impl fmt::Display for CheckPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckPort::Number(n) => write!(f, "{n}"),
            CheckPort::Name(name) => write!(f, "{name}"),
        }
    }
}

/// The canonical form of the syntax above (every setting spelled out).
impl fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.probe {
            Probe::Tcp { port } => write!(f, "tcp:{port}")?,
            Probe::Http { port, path, status } => write!(f, "http:{port}{path} status={status}")?,
        }
        write!(
            f,
            " interval={}ms timeout={}ms rise={} fall={}",
            self.interval.as_millis(),
            self.timeout.as_millis(),
            self.rise,
            self.fall
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        HealthCheck::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn tcp_with_defaults_and_settings() {
        let check = HealthCheck::parse("tcp:8080").unwrap();
        assert_eq!(
            check.probe,
            Probe::Tcp {
                port: CheckPort::Number(NonZeroU16::new(8080).unwrap())
            }
        );
        assert_eq!(
            (check.interval, check.timeout),
            (Duration::from_secs(5), Duration::from_secs(1))
        );
        assert_eq!((check.rise, check.fall), (2, 3));
        let check =
            HealthCheck::parse("  tcp:http interval=500ms timeout=200ms rise=1 fall=4 ").unwrap();
        assert_eq!(
            check.port(),
            &CheckPort::Name(PortName::new("http").unwrap())
        );
        assert_eq!(check.interval, Duration::from_millis(500));
        assert_eq!(check.timeout, Duration::from_millis(200));
        assert_eq!((check.rise, check.fall), (1, 4));
    }

    #[test]
    fn http_with_path_and_status() {
        let check = HealthCheck::parse("http:8080/healthz?full=1 status=204").unwrap();
        assert_eq!(
            check.probe,
            Probe::Http {
                port: CheckPort::Number(NonZeroU16::new(8080).unwrap()),
                path: "/healthz?full=1".into(),
                status: 204
            }
        );
        let plain = HealthCheck::parse("http:web").unwrap();
        assert!(matches!(plain.probe, Probe::Http { ref path, status: 200, .. } if path == "/"));
        // Round trip through the canonical form.
        assert_eq!(HealthCheck::parse(&check.to_string()).unwrap(), check);
    }

    #[test]
    fn errors_name_the_part_at_fault() {
        assert!(err("").starts_with("kind: "), "{}", err(""));
        assert!(err("udp:53").starts_with("kind: \"udp\""));
        assert!(err("tcp").starts_with("kind: "));
        assert!(err("tcp:0").starts_with("port: "));
        assert!(err("tcp:70000").starts_with("port: "));
        assert!(err("tcp:Web").starts_with("port: "));
        assert!(err("tcp:80 interval=5").starts_with("interval: "));
        assert!(err("tcp:80 interval=10ms").starts_with("interval: "));
        assert!(err("tcp:80 interval=1s timeout=2s").starts_with("timeout: "));
        // Finding 4: a timeout near the (1h) interval would hold a permit.
        assert!(err("tcp:80 interval=1h timeout=11s").starts_with("timeout: "));
        assert!(HealthCheck::parse("tcp:80 interval=1h timeout=10s").is_ok());
        assert!(err(&format!("tcp:80 {}", " ".repeat(600))).starts_with("kind: "));
        assert!(err("tcp:80 rise=0").starts_with("rise: "));
        assert!(err("tcp:80 fall=11").starts_with("fall: "));
        assert!(err("tcp:80 status=200").starts_with("status: "));
        assert!(err("http:80 status=99").starts_with("status: "));
        assert!(err("tcp:80 host=10.0.0.1").starts_with("host: unknown setting"));
        assert!(err("tcp:80 loose").starts_with("loose: "));
        assert!(err(&format!("http:80/{}", "a".repeat(300))).starts_with("path: "));
        assert!(err("http:80/a\u{7f}b").starts_with("path: "));
    }
}
