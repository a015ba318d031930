//! DNS over TCP, feeding [`authority::answer_into`] (the [`crate::fast`]
//! path, else [`authority::respond`]), as UDP does ([`crate::udp`]).
//!
//! Each TCP connection has its own task. Queries may be pipelined: every
//! complete message in what has been read is answered, in order, and the
//! replies go out in one write; a message that is not a query (QR set, a
//! runt) is skipped, since the length prefix keeps the stream in step.
//! A connection is closed when `idle` has passed since its last complete
//! query (or since it opened), however slowly bytes trickle in meanwhile.
//! At most `max_connections` are open at once, at most `max_per_source`
//! of them from one address: more from that address are closed on accept.

// The answer path: every narrowing cast and every panic is written out.
#![warn(clippy::cast_possible_truncation, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::authority::{self, Authority, Transport};
use crate::metrics::Metrics;
use crate::registry::Registry;

/// How many connections, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Open at once, all sources (`--max-tcp-connections`).
    pub max_connections: usize,
    /// Open at once from one address (`--max-tcp-connections-per-source`).
    pub max_per_source: usize,
    /// Since the last complete query (`--tcp-idle-timeout`).
    pub idle: Duration,
}

/// Bytes read per system call; a message may span several reads.
const READ_CHUNK: usize = 4096;

/// Accepts TCP connections on `listener` until `shutdown`.
pub async fn serve_tcp(
    listener: TcpListener,
    registry: Arc<Registry>,
    authority: Arc<Authority>,
    metrics: Arc<Metrics>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let sources = Arc::new(Sources::new(limits.max_per_source));
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
        let Some(source) = sources.enter(peer.ip()) else {
            // Closed at once; the global slot goes back with `permit`.
            metrics.abuse.tcp_refused_per_source.inc();
            debug!(%peer, "tcp connection over --max-tcp-connections-per-source");
            continue;
        };
        let registry = registry.clone();
        let authority = authority.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slots = (permit, source);
            if let Err(e) = connection(
                stream,
                peer,
                &registry,
                &authority,
                &metrics,
                limits.idle,
                &shutdown,
            )
            .await
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
    authority: &Authority,
    metrics: &Metrics,
    idle: Duration,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let mut inbox: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut outbox: Vec<u8> = Vec::new();
    // Each reply is written (or put) here, then copied behind its length.
    let mut reply: Vec<u8> = Vec::with_capacity(512);
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        // Answer every complete message read so far, in order, against
        // one snapshot.
        let snapshot = registry.snapshot();
        metrics.served.reserve(snapshot.locality.max_id());
        let mut at = 0;
        while let Some(len) = inbox
            .get(at..at + 2)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
            .filter(|len| inbox.len() >= at + 2 + len)
        {
            let message = &inbox[at + 2..at + 2 + len];
            at += 2 + len;
            deadline = tokio::time::Instant::now() + idle;
            let started = Instant::now();
            // The fast path as over UDP, else the full handler.
            let answered = authority::answer_into(
                &snapshot,
                authority,
                message,
                peer.ip(),
                Transport::Tcp,
                &mut reply,
            );
            // A response or a runt: not answered; the next message is
            // still where its length prefix says.
            let Some(outcome) = answered else {
                continue;
            };
            metrics.answered(&outcome, started.elapsed());
            // The encoder keeps a TCP reply within 65,535 bytes.
            let Ok(len) = u16::try_from(reply.len()) else {
                continue;
            };
            outbox.extend_from_slice(&len.to_be_bytes());
            outbox.extend_from_slice(&reply);
        }
        drop(snapshot);
        inbox.drain(..at);
        if !outbox.is_empty() {
            // The asker has `idle` to take its replies.
            tokio::time::timeout(idle, stream.write_all(&outbox))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow reader"))??;
            outbox.clear();
        }
        // At most one partial message (up to 64 KiB) and one chunk are held.
        inbox.reserve(READ_CHUNK);
        // Shutdown is heeded only between reads: what was read is answered.
        let read = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            read = tokio::time::timeout_at(deadline, stream.read_buf(&mut inbox)) => read,
        };
        match read {
            // Idle since the last complete query, trickling or not.
            Err(_) => return Ok(()),
            Ok(Ok(0)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) => {}
        }
    }
}

/// Open connections per source address. Touched on accept and close only,
/// never on the answer path; it holds an entry only while that address
/// has a connection open, so it is bounded by `--max-tcp-connections`.
#[derive(Debug)]
pub(crate) struct Sources {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Sources {
    pub(crate) fn new(max: usize) -> Self {
        Sources {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one more connection from `ip`, or `None` at the cap.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
        })
    }
}

/// One open connection's place in [`Sources`], given back on drop.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self
            .sources
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // The answer-path lints of this module are for its code, not its tests.
    #![allow(clippy::cast_possible_truncation, clippy::expect_used)]

    use super::*;

    #[test]
    fn per_source_slots() {
        let sources = Arc::new(Sources::new(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "192.0.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let one = sources.enter(a);
        let two = sources.enter(a);
        assert!(one.is_some() && two.is_some());
        assert!(sources.enter(a).is_none(), "a third from one address");
        assert!(sources.enter(b).is_some(), "another address");
        drop(one);
        let three = sources.enter(a);
        assert!(three.is_some(), "a closed connection frees its slot");
        drop((two, three));
        assert!(
            sources
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty(),
            "no entry outlives its connections"
        );
    }
}
