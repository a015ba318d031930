//! An HTTP listener whose connections are bounded before HTTP starts: at
//! most [`Limits::max`] open at once and [`Limits::per_source`] per client
//! (an IPv6 client is its /64), and every connection closed when it sends
//! nothing for [`Limits::idle`] (a half-sent header or body included) or
//! has been open for [`Limits::lifetime`]. A client holding many idle or
//! trickling connections spends its own share, not the process's file
//! descriptors or memory: what one connection can make hyper buffer (a
//! request header of up to about 400 KiB, its default) is held at most
//! `per_source` times per client and `max` times in all, and never longer
//! than `lifetime`.
//!
//! Every HTTP listener a meshdns process opens uses it: the registry's and
//! the syncer's admin endpoints and the VM registration API.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How a [`Bounded`] listener bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once; more wait to be accepted.
    pub max: usize,
    /// Most connections open at once from one client; more are closed on
    /// accept.
    pub per_source: usize,
    /// A connection that sends nothing this long is closed.
    pub idle: Duration,
    /// No connection lives longer (a trickle of one byte per `idle`).
    pub lifetime: Duration,
}

impl Limits {
    /// An API clients call now and then (the VM registration API).
    pub const API: Limits = Limits {
        max: 1024,
        per_source: 16,
        idle: Duration::from_secs(10),
        lifetime: Duration::from_secs(60),
    };

    /// Probes, scrapes and an operator's debug requests (`/healthz`,
    /// `/metrics`, `/debug/*`): a few clients, each with a connection or
    /// two. A scraper's keep-alive connection idle between scrapes is
    /// closed and opened anew, which HTTP clients do by themselves.
    pub const ADMIN: Limits = Limits {
        max: 256,
        per_source: 16,
        idle: Duration::from_secs(10),
        lifetime: Duration::from_secs(60),
    };
}

/// The client a connection counts against: its address, or its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A listener whose connections are bounded by its [`Limits`].
#[derive(Debug)]
pub struct Bounded {
    listener: TcpListener,
    limits: Limits,
    open: Arc<Semaphore>,
    per_source: Counts,
    /// What the accept errors are logged as (the listener's name).
    what: &'static str,
}

impl Bounded {
    /// `listener`'s connections bounded by `limits`; `what` names it in
    /// logs ("admin", "registration API").
    pub fn new(listener: TcpListener, limits: Limits, what: &'static str) -> Self {
        Bounded {
            listener,
            limits,
            open: Arc::new(Semaphore::new(limits.max)),
            per_source: Counts::default(),
            what,
        }
    }
}

/// One admitted connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    source: IpAddr,
    per_source: Counts,
    _permit: OwnedSemaphorePermit,
    /// How long it may stay silent (`Limits::idle`).
    quiet: Duration,
    idle: Pin<Box<Sleep>>,
    lifetime: Pin<Box<Sleep>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut counts = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            // Past the global cap, wait for a connection to close.
            let Ok(permit) = self.open.clone().acquire_owned().await else {
                continue;
            };
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Debug only: out of descriptors, this repeats.
                    tracing::debug!(listener = self.what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let source = client_key(peer.ip());
            {
                let mut counts = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
                let n = counts.entry(source).or_default();
                if *n >= self.limits.per_source {
                    // Dropped unanswered: this client holds its share.
                    continue;
                }
                *n += 1;
            }
            let now = Instant::now();
            let conn = Conn {
                stream,
                source,
                per_source: self.per_source.clone(),
                _permit: permit,
                quiet: self.limits.idle,
                idle: Box::pin(tokio::time::sleep_until(now + self.limits.idle)),
                lifetime: Box::pin(tokio::time::sleep_until(now + self.limits.lifetime)),
            };
            return (conn, peer);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The client address of a [`Bounded`] connection (axum's `ConnectInfo`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Bounded>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Bounded>) -> Self {
        Peer(*stream.remote_addr())
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.lifetime.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(timed_out("connection open too long")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.quiet;
                    self.idle.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(timed_out("nothing received in time")));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;

    const SMALL: Limits = Limits {
        max: 4,
        per_source: 2,
        idle: Duration::from_millis(300),
        lifetime: Duration::from_secs(2),
    };

    /// An HTTP server on a loopback port behind `Bounded` with `limits`.
    async fn serve(limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move {
            let _ = axum::serve(Bounded::new(listener, limits, "test"), app).await;
        });
        addr
    }

    async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        socket.connect(to).await.unwrap()
    }

    /// Whether the server closes `stream` (EOF or reset) within `within`.
    async fn closed(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    async fn get(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn a_client_over_its_share_is_closed_and_others_are_served() {
        let addr = serve(SMALL).await;
        let mut first = connect_from([127, 0, 0, 1], addr).await;
        let mut second = connect_from([127, 0, 0, 1], addr).await;
        let mut third = connect_from([127, 0, 0, 1], addr).await;
        assert!(
            closed(&mut third, Duration::from_secs(5)).await,
            "the third connection of one client is closed on accept"
        );
        let mut other = connect_from([127, 0, 0, 2], addr).await;
        assert!(get(&mut other).await.ends_with("ok"));
        // Its own two are served.
        assert!(get(&mut first).await.ends_with("ok"));
        assert!(get(&mut second).await.ends_with("ok"));
    }

    #[tokio::test]
    async fn silent_and_trickling_connections_are_closed() {
        let addr = serve(SMALL).await;
        let mut silent = connect_from([127, 0, 0, 1], addr).await;
        assert!(
            closed(&mut silent, Duration::from_secs(5)).await,
            "closed after its idle time"
        );
        // A header sent a byte at a time, each within the idle time, is
        // still closed at the end of its lifetime.
        let mut trickle = connect_from([127, 0, 0, 1], addr).await;
        let started = Instant::now();
        let mut cut = false;
        for byte in b"GET / HTTP/1.1\r\nX-Slow: ".iter().cycle().take(100) {
            if trickle.write_all(&[*byte]).await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > SMALL.lifetime + Duration::from_secs(3) {
                break;
            }
        }
        assert!(
            cut || closed(&mut trickle, Duration::from_secs(1)).await,
            "a trickle outlives no lifetime"
        );
        assert!(started.elapsed() < SMALL.lifetime + Duration::from_secs(3));
    }

    #[tokio::test]
    async fn past_the_cap_connections_wait_for_one_to_close() {
        let addr = serve(Limits {
            max: 2,
            per_source: 8,
            ..SMALL
        })
        .await;
        let mut held = vec![
            connect_from([127, 0, 0, 1], addr).await,
            connect_from([127, 0, 0, 2], addr).await,
        ];
        // The kernel completes the handshake; the server reads nothing
        // from the third until one of the two is gone.
        let mut waiting = connect_from([127, 0, 0, 3], addr).await;
        waiting
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(
            tokio::time::timeout(Duration::from_millis(150), waiting.read(&mut buf))
                .await
                .is_err(),
            "not served past the cap"
        );
        held.clear();
        let n = tokio::time::timeout(Duration::from_secs(5), waiting.read(&mut buf))
            .await
            .expect("served once a slot is free")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn ipv6_clients_are_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(
            client_key(a),
            client_key("2001:db8:1:3::1".parse().unwrap())
        );
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(client_key(v4), v4);
        assert_eq!(client_key("::ffff:10.0.0.1".parse().unwrap()), v4);
    }
}
