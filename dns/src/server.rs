//! DNS over TCP, feeding [`authority::answer_into`] (the [`crate::fast`]
//! path, else [`authority::respond`]), as UDP does ([`crate::udp`]).
//!
//! Each TCP connection has its own task. Queries may be pipelined: every
//! complete message in what has been read is answered, in order, and the
//! replies go out in one write; a message that is not a query (QR set, a
//! runt) is skipped, since the length prefix keeps the stream in step.
//! A connection is closed when `idle` has passed since its last answered
//! query (or since it opened), however many bytes or unanswered messages
//! trickle in meanwhile, and when `lifetime` has passed since it opened,
//! however busy. Once [`OUTBOX_CAP`] bytes of replies are pending, nothing
//! more is answered or read until they are written. At most
//! `max_connections` are open at once, at most `max_per_source` of them
//! from one source (an address or an IPv6 /64: `client_key`): more from it are closed on accept.

// The answer path: every narrowing cast and every panic is written out.
#![warn(clippy::cast_possible_truncation, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use meshdns_cli::connections::client_key;
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
    /// Open at once from one source (`--max-tcp-connections-per-source`).
    pub max_per_source: usize,
    /// Since the last answered query (`--tcp-idle-timeout`).
    pub idle: Duration,
    /// Since the connection was accepted (`--max-tcp-connection-lifetime`).
    pub lifetime: Duration,
}

/// Bytes read per system call; a message may span several reads.
const READ_CHUNK: usize = 4096;

/// Reply bytes a connection may have pending before it stops answering
/// (and reading) until they are written. A reply started under the cap is
/// kept whole, so at most `OUTBOX_CAP - 1 + 2 + 65,535` bytes are pending.
const OUTBOX_CAP: usize = 64 * 1024;

/// A buffer grown this far past what it needs (by a large message or a
/// burst of replies) is shrunk back once they are done with ([`shrink`]).
const SLACK: usize = 16 * 1024;

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
    let mut accept_errors = AcceptErrors::default();
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
                    // Out of descriptors fails every 10 ms: one line a second.
                    if let Some(suppressed) = accept_errors.note(Instant::now()) {
                        warn!(error = %e, suppressed, "tcp accept error");
                    }
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
            match connection(
                stream, peer, &registry, &authority, &metrics, &limits, &shutdown,
            )
            .await
            {
                Ok(Some(close)) => {
                    metrics.abuse.tcp_closed(close.reason());
                    debug!(%peer, reason = close.reason(), "tcp connection closed");
                }
                Ok(None) => {}
                Err(e) => debug!(%peer, error = %e, "tcp connection ended"),
            }
        });
    }
}

/// Why the server closed a connection (`meshdns_dns_tcp_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// No answered query for `idle`.
    Idle,
    /// Open for `lifetime`.
    Lifetime,
    /// Its replies not taken within `idle`.
    SlowReader,
}

impl Close {
    fn reason(self) -> &'static str {
        match self {
            Close::Idle => "idle",
            Close::Lifetime => "lifetime",
            Close::SlowReader => "slow_reader",
        }
    }
}

/// Serves one connection: `Some` when the server closed it, `None` when
/// the client did or at shutdown.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    registry: &Registry,
    authority: &Authority,
    metrics: &Metrics,
    limits: &TcpLimits,
    shutdown: &CancellationToken,
) -> std::io::Result<Option<Close>> {
    let mut inbox: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut outbox: Vec<u8> = Vec::new();
    // Each reply is written (or put) here, then copied behind its length.
    let mut reply: Vec<u8> = Vec::with_capacity(512);
    let opened = tokio::time::Instant::now();
    let end_of_life = opened + limits.lifetime;
    let mut deadline = opened + limits.idle;
    loop {
        // Answer the complete messages read so far, in order, against one
        // snapshot, until the replies reach the cap.
        let snapshot = registry.snapshot();
        metrics.served.reserve(snapshot.locality.max_id());
        let mut at = 0;
        while outbox.len() < OUTBOX_CAP {
            let Some(len) = complete(&inbox[at..]) else {
                break;
            };
            let message = &inbox[at + 2..at + 2 + len];
            at += 2 + len;
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
            // A response or a runt: not answered, and the idle deadline
            // stands; the next message is still where its length prefix says.
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
            // The asker has `idle` to take its replies; once taken, its
            // idle time starts again.
            let write = tokio::time::timeout(limits.idle, stream.write_all(&outbox)).await;
            match write {
                Err(_) => return Ok(Some(Close::SlowReader)),
                Ok(written) => written?,
            }
            deadline = tokio::time::Instant::now() + limits.idle;
            outbox.clear();
            shrink(&mut outbox, READ_CHUNK);
            // Stopped at the cap: answer the rest before reading more.
            if complete(&inbox).is_some() {
                continue;
            }
        }
        shrink(&mut reply, 512);
        if tokio::time::Instant::now() >= end_of_life {
            return Ok(Some(Close::Lifetime));
        }
        // What is held: at most one partial message (up to 64 KiB) and
        // room for the rest of it, or for one chunk.
        let room = rest_of_message(&inbox).max(READ_CHUNK);
        let need = inbox.len() + room;
        shrink(&mut inbox, need);
        inbox.reserve_exact(room);
        let close_at = deadline.min(end_of_life);
        // Shutdown is heeded only between reads: what was read is answered.
        let read = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            read = tokio::time::timeout_at(close_at, stream.read_buf(&mut inbox)) => read,
        };
        match read {
            // No answered query for `idle`, trickling or not; or too old.
            Err(_) if close_at == deadline => return Ok(Some(Close::Idle)),
            Err(_) => return Ok(Some(Close::Lifetime)),
            Ok(Ok(0)) => return Ok(None),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) => {}
        }
    }
}

/// The length of the message `buffered` starts with, when it is whole.
fn complete(buffered: &[u8]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes([*buffered.first()?, *buffered.get(1)?]));
    (buffered.len() >= 2 + len).then_some(len)
}

/// Bytes still to come of the partial message `buffered` holds (after the
/// complete ones were taken); 0 while its length is not read yet.
fn rest_of_message(buffered: &[u8]) -> usize {
    match buffered {
        [hi, lo, ..] => {
            (2 + usize::from(u16::from_be_bytes([*hi, *lo]))).saturating_sub(buffered.len())
        }
        _ => 0,
    }
}

/// Gives back `buffer`'s capacity beyond `need` when it is over by more
/// than [`SLACK`]: not on every round, so a steady pipeline does not
/// reallocate.
fn shrink(buffer: &mut Vec<u8>, need: usize) {
    if buffer.capacity() > need + SLACK {
        buffer.shrink_to(need);
    }
}

/// Accept errors are logged at most once a second, with how many were not.
#[derive(Debug, Default)]
struct AcceptErrors {
    logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    /// An accept error at `now`: `Some(suppressed since the last line)` if
    /// it is to be logged.
    fn note(&mut self, now: Instant) -> Option<u64> {
        if self
            .logged
            .is_some_and(|logged| now.duration_since(logged) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Open connections per source (an address, or an IPv6 /64:
/// [`client_key`], as every listener counts them). Touched on accept and
/// close only, never on the answer path; it holds an entry only while that
/// source has a connection open, so it is bounded by `--max-tcp-connections`.
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
        let ip = client_key(ip);
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

    use tokio::net::TcpSocket;

    /// `global. SOA` as a framed TCP message with `id`.
    fn soa_query(id: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(b"\x06global\x00\x00\x06\x00\x01");
        let mut framed = (m.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&m);
        framed
    }

    /// A server on loopback for `global.` whose accepted sockets have a
    /// small send buffer, so the kernel takes few replies off its hands.
    async fn server(
        limits: TcpLimits,
    ) -> (SocketAddr, Arc<Metrics>, Arc<Registry>, CancellationToken) {
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registry::new(5, false, metrics.clone()));
        let domain = crate::qname::Domain::parse("global").unwrap_or_else(|e| panic!("{e}"));
        let authority =
            Arc::new(Authority::new(vec![domain], 5, 5, 8, 1).unwrap_or_else(|e| panic!("{e}")));
        let socket = TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
        socket
            .set_send_buffer_size(4096)
            .unwrap_or_else(|e| panic!("{e}"));
        socket
            .bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        let listener = socket.listen(16).unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_tcp(
            listener,
            registry.clone(),
            authority,
            metrics.clone(),
            limits,
            shutdown.clone(),
        ));
        (addr, metrics, registry, shutdown)
    }

    /// Queries answered so far, from the metrics.
    fn answered(metrics: &Metrics, registry: &Registry) -> u64 {
        metrics
            .render(registry)
            .lines()
            .filter(|l| l.starts_with("meshdns_dns_queries_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// The next framed reply on `stream`.
    async fn read_reply(stream: &mut tokio::net::tcp::OwnedReadHalf) -> Vec<u8> {
        let mut len = [0u8; 2];
        stream
            .read_exact(&mut len)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream
            .read_exact(&mut reply)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        reply
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_does_not_read_has_at_most_the_cap_answered() {
        let (addr, metrics, registry, shutdown) = server(TcpLimits {
            max_connections: 8,
            max_per_source: 8,
            idle: Duration::from_secs(10),
            lifetime: Duration::from_secs(60),
        })
        .await;
        let socket = TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
        socket
            .set_recv_buffer_size(4096)
            .unwrap_or_else(|e| panic!("{e}"));
        let stream = socket.connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        let (mut reader, mut writer) = stream.into_split();
        // One reply's size.
        writer
            .write_all(&soa_query(0))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let reply_len = read_reply(&mut reader).await.len() + 2;
        // A 65,535-byte message that is not a query (QR set) grows the
        // read buffer; then 4,000 pipelined queries, none of whose
        // replies is read for now.
        let mut large = vec![0xff, 0xff, 0, 0, 0x80];
        large.resize(2 + 65_535, 0);
        writer
            .write_all(&large)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        const QUERIES: u16 = 4_000;
        let batch: Vec<u8> = (1..=QUERIES).flat_map(soa_query).collect();
        let write = tokio::spawn(async move {
            writer
                .write_all(&batch)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            writer
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let held = (answered(&metrics, &registry) - 1) as usize * reply_len;
        println!("{reply_len}-byte replies; {held} bytes of them answered and not read");
        // The cap (and one reply past it), and what the two small socket
        // buffers take.
        assert!(
            held <= OUTBOX_CAP + reply_len + 32 * 1024,
            "{held} bytes of replies held"
        );
        // Once read, every query is answered, in order.
        for id in 1..=QUERIES {
            let reply = tokio::time::timeout(Duration::from_secs(10), read_reply(&mut reader))
                .await
                .unwrap_or_else(|_| panic!("reply {id}"));
            assert_eq!(u16::from_be_bytes([reply[0], reply[1]]), id);
        }
        drop(write.await);
        shutdown.cancel();
    }

    #[test]
    fn messages_are_framed_by_their_length() {
        assert_eq!(complete(&[]), None);
        assert_eq!(complete(&[0]), None);
        assert_eq!(complete(&[0, 0]), Some(0));
        assert_eq!(complete(&[0, 2, 9]), None);
        assert_eq!(complete(&[0, 2, 9, 9, 9]), Some(2));
        assert_eq!(rest_of_message(&[]), 0);
        assert_eq!(rest_of_message(&[0xff]), 0);
        assert_eq!(rest_of_message(&[0xff, 0xff]), 65_535);
        assert_eq!(rest_of_message(&[0xff, 0xff, 1, 2, 3]), 65_532);
    }

    #[test]
    fn buffers_shrink_only_well_past_their_need() {
        let mut buffer: Vec<u8> = Vec::with_capacity(128 * 1024);
        shrink(&mut buffer, READ_CHUNK + 100);
        assert!(buffer.capacity() < 8 * 1024, "{}", buffer.capacity());
        let mut steady: Vec<u8> = Vec::with_capacity(READ_CHUNK + SLACK);
        shrink(&mut steady, READ_CHUNK);
        assert_eq!(
            steady.capacity(),
            READ_CHUNK + SLACK,
            "within the slack: kept"
        );
    }

    #[test]
    fn accept_errors_are_logged_once_a_second_with_a_count() {
        let mut errors = AcceptErrors::default();
        let start = Instant::now();
        assert_eq!(errors.note(start), Some(0), "the first is logged");
        let logged: Vec<Option<u64>> = (1..=250)
            .map(|i| errors.note(start + Duration::from_millis(10 * i)))
            .collect();
        // At 1.00 s, 2.00 s: each says how many were not logged before it.
        assert_eq!(
            logged.iter().flatten().collect::<Vec<_>>(),
            [&99, &99],
            "{logged:?}"
        );
    }

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
