//! The gRPC listener's connections before HTTP/2 sees them: TCP keepalive
//! on each, at most `--max-grpc-connections` open at once (more wait to be
//! accepted, as DNS over TCP's do) and at most
//! `--max-grpc-connections-per-source` from one address (more are closed
//! on accept). Each connection carries its slots and gives them back when
//! it closes, whatever closed it.
//!
//! Why: what a connection can make the hub hold is bounded by its HTTP/2
//! windows and stream count (`--grpc-connection-window-bytes`,
//! `--max-grpc-streams-per-connection`) plus hyper's and TLS's own state
//! (about 42 KB measured); without a count, an unauthenticated client
//! that opens connections without end multiplies that without end.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::debug;

use crate::metrics::Metrics;
use crate::server::{SourceSlot, Sources};

/// How many gRPC connections, all sources and from one.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// `--max-grpc-connections`.
    pub max: usize,
    /// `--max-grpc-connections-per-source`.
    pub max_per_source: usize,
}

/// How long the listener pauses after a failed accept (tonic logs it at
/// trace level and asks for the next connection straight away).
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// An accepted gRPC connection and its places under the limits.
#[derive(Debug)]
pub struct Admitted {
    stream: TcpStream,
    _slots: Slots,
}

/// Given back on drop: the global slot, the source's, the gauge.
#[derive(Debug)]
struct Slots {
    _global: OwnedSemaphorePermit,
    _source: SourceSlot,
    metrics: Arc<Metrics>,
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.metrics.abuse.grpc_connections.dec();
    }
}

/// The connections of `listener`, each with TCP keepalive (a second line
/// behind HTTP/2 PINGs, for a peer whose HTTP/2 stack hangs), admitted
/// under `limits`.
pub fn incoming(
    listener: TcpListener,
    idle: Duration,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = io::Result<Admitted>> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(idle);
    let slots = Arc::new(Semaphore::new(limits.max));
    let sources = Arc::new(Sources::new(limits.max_per_source));
    // One connection at a time: the next is accepted only once this one
    // has its global slot, so at most one waits beyond the limit.
    TcpListenerStream::new(listener)
        .then(move |accepted| {
            let (slots, sources, metrics) = (slots.clone(), sources.clone(), metrics.clone());
            let keepalive = keepalive.clone();
            async move {
                let stream = match accepted {
                    Ok(stream) => stream,
                    Err(e) => {
                        // Out of descriptors, accept fails at once and
                        // tonic asks again at once: pause, as DNS over TCP
                        // does, rather than spin a core.
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        return Some(Err(e));
                    }
                };
                // The semaphore is never closed.
                let global = slots.acquire_owned().await.ok()?;
                let peer = stream.peer_addr().ok()?;
                let Some(source) = sources.enter(peer.ip()) else {
                    // Closed at once; the global slot goes back with `global`.
                    metrics.abuse.grpc_refused_per_source.inc();
                    debug!(%peer, "grpc connection over --max-grpc-connections-per-source");
                    return None;
                };
                if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                    debug!(error = %e, "cannot set tcp keepalive on a grpc connection");
                }
                metrics.abuse.grpc_connections.inc();
                Some(Ok(Admitted {
                    stream,
                    _slots: Slots {
                        _global: global,
                        _source: source,
                        metrics,
                    },
                }))
            }
        })
        .filter_map(|admitted| admitted)
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
