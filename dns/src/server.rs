//! DNS over TCP, feeding [`zone::respond`] (UDP is [`crate::udp`]).
//!
//! Each TCP connection has its own task, answers its queries in order, and
//! is closed after an idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::zone::{self, Transport, Zone};

/// Accepts TCP connections on `listener` until `shutdown`: at most
/// `max_connections` at once, each closed after `idle` without a query.
#[allow(clippy::too_many_arguments)]
pub async fn serve_tcp(
    listener: TcpListener,
    registry: Arc<Registry>,
    zone: Arc<Zone>,
    metrics: Arc<Metrics>,
    max_connections: usize,
    idle: Duration,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = slots.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { return };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "tcp accept error");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        let zone = zone.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) =
                connection(stream, peer, &registry, &zone, &metrics, idle, &shutdown).await
            {
                debug!(%peer, error = %e, "tcp connection ended");
            }
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    registry: &Registry,
    zone: &Zone,
    metrics: &Metrics,
    idle: Duration,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut len = [0u8; 2];
        // Shutdown is heeded only between queries: a query read is answered.
        let read = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            read = tokio::time::timeout(idle, stream.read_exact(&mut len)) => read,
        };
        match read {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) => {}
        }
        buf.resize(usize::from(u16::from_be_bytes(len)), 0);
        tokio::time::timeout(idle, stream.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "partial query"))??;
        let started = Instant::now();
        let reply = {
            let snapshot = registry.snapshot();
            zone::respond(&snapshot, zone, &buf, peer.ip(), Transport::Tcp)
        };
        let Some((reply, outcome)) = reply else {
            // Something we do not answer (a response, a runt): the stream
            // can no longer be trusted to be in step.
            return Ok(());
        };
        metrics.answered(&outcome, started.elapsed());
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        framed.extend_from_slice(&reply);
        tokio::time::timeout(idle, stream.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow reader"))??;
    }
}
