//! The registration API's connections, bounded before HTTP starts: at most
//! [`MAX_CONNECTIONS`] open at once and [`MAX_PER_SOURCE`] per client
//! (an IPv6 client is its /64), and every connection closed when it sends
//! nothing for [`IDLE_READ`] (a half-sent header or body included) or has
//! been open for [`MAX_LIFETIME`]. A client holding many idle or
//! trickling connections spends its own share, not the listener's file
//! descriptors.

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

/// Most connections open at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most connections open at once from one client.
pub const MAX_PER_SOURCE: usize = 16;
/// A connection that sends nothing this long is closed.
pub const IDLE_READ: Duration = Duration::from_secs(10);
/// No connection lives longer (a trickle of one byte per `IDLE_READ`).
pub const MAX_LIFETIME: Duration = Duration::from_secs(60);

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

/// A listener whose connections are bounded as above.
#[derive(Debug)]
pub struct Bounded {
    listener: TcpListener,
    open: Arc<Semaphore>,
    per_source: Counts,
}

impl Bounded {
    pub fn new(listener: TcpListener) -> Self {
        Bounded {
            listener,
            open: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            per_source: Counts::default(),
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
                    tracing::debug!(error = %e, "registration API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let source = client_key(peer.ip());
            {
                let mut counts = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
                let n = counts.entry(source).or_default();
                if *n >= MAX_PER_SOURCE {
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
                idle: Box::pin(tokio::time::sleep_until(now + IDLE_READ)),
                lifetime: Box::pin(tokio::time::sleep_until(now + MAX_LIFETIME)),
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
                    let next = Instant::now() + IDLE_READ;
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
