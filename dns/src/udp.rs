//! DNS over UDP: one blocking thread per socket, several sockets sharing
//! each address through SO_REUSEPORT (`--workers`), so the kernel spreads
//! askers over the workers and no two workers share a queue.
//!
//! A worker takes whatever has queued up in one `recvmmsg` (it blocks for
//! the first datagram only), answers the batch against one snapshot load,
//! and sends every reply in one `sendmmsg`. Under load that is two system
//! calls per batch instead of two per query; when idle it is the same as
//! `recvfrom`. Each query goes through [`authority::answer_into`]: the
//! [`crate::fast`] path, else [`authority::respond`]. With `--rrl-rate`,
//! each reply then takes a token from its source prefix's bucket
//! ([`rrl`]; one table shared by every worker, read with one clock
//! reading per batch): over the rate it is dropped or slipped out
//! truncated, unless its query carried a valid server cookie.
//!
//! Shutdown: a worker notices the token within [`POLL`], then answers what
//! is already queued on its socket before it returns.

// The answer path: every narrowing cast and every panic is written out.
#![warn(clippy::cast_possible_truncation, clippy::expect_used)]

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, recvmmsg, sendmmsg};
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::authority::{self, Authority, Transport};
use crate::metrics::{Metrics, Outcome};
use crate::registry::Registry;
use crate::rrl::{self, RateLimiter, Verdict};

pub mod receive_buffer;

/// Datagrams taken per system call.
const BATCH: usize = 32;
/// Largest query read: any UDP datagram (a query over 4,096 bytes, say
/// with padding, is read like any other). 32 such buffers per worker, in
/// one allocation ([`STRIDE`]).
const MAX_QUERY: usize = 65_535;
/// Where each receive buffer starts in the worker's inbox: 64 KiB apart,
/// every buffer's first bytes (what a query is) would fall in the same
/// cache sets, and a batch of 32 evicts its own queries before it is
/// answered; 9 cache lines more each puts them in 32 different sets.
const STRIDE: usize = (MAX_QUERY + 1) + 9 * 64;
/// How often an idle worker looks at the shutdown token.
const POLL: Duration = Duration::from_millis(100);

/// How the UDP sockets of each `--dns-listen` address are made.
#[derive(Debug, Clone, Copy)]
pub struct UdpSockets {
    /// Sockets (and worker threads) per address.
    pub workers: usize,
    /// Receive buffer asked for each socket, bytes (0: the kernel's default).
    pub receive_buffer: usize,
}

/// The UDP sockets of one `--dns-listen` address: one per worker.
#[derive(Debug)]
pub struct UdpListener {
    pub sockets: Vec<UdpSocket>,
    /// The receive buffer each socket was granted, bytes.
    pub receive_buffer: usize,
}

impl UdpListener {
    /// Binds `workers` sockets to `addr` (with port 0, all to the port the
    /// first was given). More than one share the address by SO_REUSEPORT.
    pub fn bind(addr: SocketAddr, how: UdpSockets) -> std::io::Result<Self> {
        let workers = how.workers.max(1);
        let mut receive_buffer = 0;
        let mut sockets = Vec::with_capacity(workers);
        let mut at = addr;
        for _ in 0..workers {
            let socket = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
            if workers > 1 {
                socket.set_reuse_port(true)?;
            }
            socket.bind(&at.into())?;
            socket.set_read_timeout(Some(POLL))?;
            receive_buffer = receive_buffer::set(&socket, how.receive_buffer)?;
            let socket: UdpSocket = socket.into();
            at = socket.local_addr()?;
            sockets.push(socket);
        }
        Ok(UdpListener {
            sockets,
            receive_buffer,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sockets[0].local_addr()
    }
}

/// The shared things a worker answers with.
#[derive(Debug, Clone)]
pub struct Answerer {
    pub registry: Arc<Registry>,
    pub authority: Arc<Authority>,
    pub metrics: Arc<Metrics>,
    /// Response rate limiting, when `--rrl-rate` is set.
    pub rrl: Option<Arc<RateLimiter>>,
}

/// One worker: answers on `socket` until `shutdown`, then drains it.
/// Blocking: run it on its own thread.
pub fn serve(socket: UdpSocket, answerer: Answerer, shutdown: CancellationToken) {
    let fd = socket.as_raw_fd();
    let mut inbox = vec![0u8; BATCH * STRIDE];
    let mut outbox: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut received: Vec<(usize, Option<SockaddrStorage>)> = Vec::with_capacity(BATCH);
    let mut replies: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(BATCH);
    let mut answered: Vec<Option<Outcome>> = vec![None; BATCH];
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut slipper = answerer.rrl.as_ref().map(|r| r.slipper());
    let mut draining = false;
    loop {
        if !draining && shutdown.is_cancelled() {
            draining = true;
        }
        // Blocks (up to POLL) for the first datagram, then takes what is
        // queued; when draining, never blocks.
        let flags = if draining {
            MsgFlags::MSG_DONTWAIT
        } else {
            MsgFlags::MSG_WAITFORONE
        };
        received.clear();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = inbox
                .chunks_exact_mut(STRIDE)
                .map(|b| [IoSliceMut::new(&mut b[..MAX_QUERY])])
                .collect();
            match recvmmsg(fd, &mut recv_headers, slices.iter_mut(), flags, None) {
                Ok(messages) => {
                    received.extend(messages.map(|m| (m.bytes, m.address)));
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    if draining {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    // ICMP errors from earlier sends surface here on Linux;
                    // they concern one peer, not the socket.
                    debug!(error = %e, "udp receive error");
                    continue;
                }
            }
        }
        if received.is_empty() && draining {
            return;
        }
        let started = Instant::now();
        replies.clear();
        {
            let snapshot = answerer.registry.snapshot();
            // A new cluster's answer counters, if it is the first batch to
            // see it: a compare, and rarely an allocation off the answer path.
            answerer.metrics.served.reserve(snapshot.locality.max_id());
            for (i, (len, address)) in received.iter().enumerate() {
                answered[i] = None;
                let Some(peer) = address.as_ref().and_then(peer_ip) else {
                    continue;
                };
                let at = i * STRIDE;
                let packet = &inbox[at..at + (*len).min(MAX_QUERY)];
                answered[i] = authority::answer_into(
                    &snapshot,
                    &answerer.authority,
                    packet,
                    peer,
                    Transport::Udp,
                    &mut outbox[i],
                );
            }
            // One clock reading for the batch: no reply leaves before the
            // batch's `sendmmsg`, so each waited about as long (the
            // answering of the batch included).
            let elapsed = started.elapsed();
            let now = answerer.rrl.as_ref().map_or(0, |r| r.now());
            for (i, (_, address)) in received.iter().enumerate() {
                let Some(outcome) = &answered[i] else {
                    continue;
                };
                let Some(address) = *address else { continue };
                let Some(peer) = peer_ip(&address) else {
                    continue;
                };
                if let (Some(limiter), Some(slipper)) = (&answerer.rrl, &mut slipper)
                    && !outcome.cookie
                    && !limiter.allow(peer, now)
                {
                    if slipper.limited() == Verdict::Drop {
                        answerer.metrics.abuse.rrl_dropped.inc();
                        continue;
                    }
                    rrl::truncate(&mut outbox[i]);
                    answerer.metrics.abuse.rrl_slipped.inc();
                    replies.push((i, address));
                    continue;
                }
                answerer.metrics.answered(outcome, elapsed);
                replies.push((i, address));
            }
        }
        send(fd, &mut send_headers, &outbox, &replies);
    }
}

fn peer_ip(address: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

/// Sends `replies` (outbox index, peer) in as few `sendmmsg` calls as the
/// kernel allows; a reply the kernel refuses is dropped, not retried.
fn send(
    fd: i32,
    headers: &mut MultiHeaders<SockaddrStorage>,
    outbox: &[Vec<u8>],
    replies: &[(usize, SockaddrStorage)],
) {
    let mut start = 0;
    while start < replies.len() {
        let batch = &replies[start..];
        let slices: Vec<[IoSlice<'_>; 1]> = batch
            .iter()
            .map(|(i, _)| [IoSlice::new(&outbox[*i])])
            .collect();
        let addresses: Vec<Option<SockaddrStorage>> = batch.iter().map(|(_, a)| Some(*a)).collect();
        match sendmmsg(
            fd,
            headers,
            slices.iter(),
            &addresses,
            [],
            MsgFlags::empty(),
        ) {
            Ok(sent) => {
                let sent = sent.count();
                // Zero sent means the first one failed: skip it.
                start += sent.max(1);
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                debug!(peer = ?batch[0].1.family(), error = %e, "udp send error");
                start += 1;
            }
        }
    }
}
