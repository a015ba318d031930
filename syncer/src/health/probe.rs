//! One health check attempt: a TCP connect, or an HTTP/1.1 `GET` whose
//! status line is read (at most [`MAX_REPLY_BYTES`]; the body is not).

use std::net::SocketAddr;
use std::time::Duration;

use meshdns_proto::model::Failure;
use meshdns_proto::model::health_check::Probe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most bytes of an HTTP reply read to find its status line.
pub const MAX_REPLY_BYTES: usize = 1024;

/// Why an attempt failed, with the detail `/status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub failure: Failure,
    pub detail: String,
}

fn failed(failure: Failure, detail: impl Into<String>) -> Failed {
    Failed {
        failure,
        detail: detail.into(),
    }
}

fn connect_failure(e: &std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset => {
            Failure::Refused
        }
        std::io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Error,
    }
}

/// Runs `probe` against `target` within `timeout`.
pub async fn run(probe: &Probe, target: SocketAddr, timeout: Duration) -> Result<(), Failed> {
    match tokio::time::timeout(timeout, attempt(probe, target)).await {
        Ok(result) => result,
        Err(_) => Err(failed(
            Failure::Timeout,
            format!("no answer within {timeout:?}"),
        )),
    }
}

async fn attempt(probe: &Probe, target: SocketAddr) -> Result<(), Failed> {
    let mut stream = TcpStream::connect(target)
        .await
        .map_err(|e| failed(connect_failure(&e), format!("connect {target}: {e}")))?;
    let (path, expected) = match probe {
        Probe::Tcp { .. } => return Ok(()),
        Probe::Http { path, status, .. } => (path, *status),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: meshdns-syncer-health-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| failed(connect_failure(&e), format!("send to {target}: {e}")))?;
    let mut reply = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    let line_end = loop {
        if let Some(end) = reply.iter().position(|b| *b == b'\n') {
            break end;
        }
        if reply.len() >= MAX_REPLY_BYTES {
            return Err(failed(
                Failure::Error,
                "no HTTP status line in the first 1024 bytes",
            ));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| failed(connect_failure(&e), format!("read from {target}: {e}")))?;
        if n == 0 {
            return Err(failed(
                Failure::Error,
                "connection closed before an HTTP status line",
            ));
        }
        reply.extend_from_slice(&chunk[..n]);
    };
    let line = String::from_utf8_lossy(&reply[..line_end]);
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| failed(Failure::Error, "the reply is not HTTP/1.x"))?;
    if status == expected {
        Ok(())
    } else {
        Err(failed(
            Failure::BadStatus,
            format!("GET {path}: status {status}, want {expected}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshdns_proto::model::health_check::CheckPort;
    use std::num::NonZeroU16;
    use tokio::net::TcpListener;

    fn http(status: u16) -> Probe {
        Probe::Http {
            port: CheckPort::Number(NonZeroU16::MIN),
            path: "/healthz".into(),
            status,
        }
    }

    async fn server(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn tcp_and_http_outcomes() {
        let ok = server(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let bad = server(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").await;
        let junk = server(b"SSH-2.0-OpenSSH\r\n").await;
        let t = Duration::from_secs(5);
        let tcp = Probe::Tcp {
            port: CheckPort::Number(NonZeroU16::MIN),
        };
        assert_eq!(run(&tcp, ok, t).await, Ok(()));
        assert_eq!(run(&http(200), ok, t).await, Ok(()));
        assert_eq!(
            run(&http(200), bad, t).await.unwrap_err().failure,
            Failure::BadStatus
        );
        assert_eq!(run(&http(503), bad, t).await, Ok(()));
        assert_eq!(
            run(&http(200), junk, t).await.unwrap_err().failure,
            Failure::Error
        );
        // A port nobody listens on.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(
            run(&tcp, closed, t).await.unwrap_err().failure,
            Failure::Refused
        );
        // A listener that never answers the GET.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let got = run(&http(200), silent_addr, Duration::from_millis(200)).await;
        assert_eq!(got.unwrap_err().failure, Failure::Timeout);
        drop(silent);
    }
}
