//! A batch of queries answered in two passes (UDP's `recvmmsg` batch).
//!
//! Answering one query is a string of cache misses on a fleet of
//! thousands of services: the shard's map, the key, the view, its
//! chains, the cluster parts and their address lists, each read only
//! once the one before has been. One at a time, each query's misses wait
//! behind the previous query's walk. Here every query is first read and
//! its service looked up ([`fast::read`], [`fast::Read::touch`]), one
//! after another, so the lookups of different queries are in flight
//! together; then each is written in order ([`fast::write`], else the
//! full handler), finding its service in cache.
//!
//! The replies are exactly those of [`super::answer_into`] on each query
//! in order: the read half has no effect a reply can see (the rotation
//! is taken in the write half, in the same order), and the snapshot is
//! the same for the whole batch.

use std::net::IpAddr;

use crate::fast::{self, Read};
use crate::metrics::Outcome;
use crate::snapshot::Snapshot;

use super::{Authority, Transport, respond};

/// Queries read ahead of their writing: the UDP receive batch.
pub const AHEAD: usize = 32;

/// Answers `queries` (each its bytes and its source) over `transport`:
/// reply `i` into `outs[i]` and its outcome into `answered[i]`, `None`
/// meaning drop it (see [`respond`]; `outs[i]` is then unspecified).
/// `outs` and `answered` are at least as long as `queries`.
pub fn answer_batch(
    snapshot: &Snapshot,
    authority: &Authority,
    transport: Transport,
    queries: &[(&[u8], IpAddr)],
    outs: &mut [Vec<u8>],
    answered: &mut [Option<Outcome>],
) {
    let mut first = 0;
    for chunk in queries.chunks(AHEAD) {
        let mut reads: [Option<Read<'_, '_>>; AHEAD] = [None; AHEAD];
        for (read, &(packet, source)) in reads.iter_mut().zip(chunk) {
            *read = fast::read(snapshot, authority, packet, source);
            if let Some(read) = read {
                read.touch();
            }
        }
        for (j, (&(packet, source), read)) in chunk.iter().zip(&reads).enumerate() {
            let out = &mut outs[first + j];
            let fast = read
                .as_ref()
                .and_then(|read| fast::write(transport, snapshot, authority, read, source, out));
            answered[first + j] = fast.or_else(|| {
                let (reply, outcome) = respond(snapshot, authority, packet, source, transport)?;
                *out = reply;
                Some(outcome)
            });
        }
        first += chunk.len();
    }
}
