//! `--max-export-bytes-in-flight`: one budget of bytes shared by every
//! Export stream, so that the sum of what all streams buffer is bounded,
//! not only what each one buffers ([`super::frames`]).
//!
//! A stream reserves a message's whole announced length when its header
//! arrives, before it buffers the body, and gives it back when the
//! message is decoded or the stream ends. One reservation per stream, of
//! at most `--max-grpc-message-bytes`, taken whole or not at all, and a
//! budget at least that big (checked at startup): no stream ever holds
//! part of what it needs while waiting for the rest, so the budget cannot
//! deadlock. Waiters are served in order (tokio's semaphore is fair), so a
//! big message is not starved by small ones arriving after it.
//!
//! What needs no reservation: a stream's first message (the Hello, at
//! most 32 KiB, refused at its header if bigger, and bounded in number by
//! `--max-pending-hellos`) and messages of at most [`super::frames::KEEP`]
//! bytes (heartbeats, small Deltas), which fit in the buffer a stream
//! keeps anyway: they never wait behind a big Snapshot, and what they
//! hold is bounded per stream, by the stream count.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::BudgetMetrics;

/// Bytes every Export stream's messages may reserve, together.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    permits: Arc<Semaphore>,
    metrics: BudgetMetrics,
}

/// The biggest budget a semaphore can count.
pub const MAX_BYTES: usize = Semaphore::MAX_PERMITS;

/// A reservation being waited for.
pub(super) type Reserving = Pin<Box<dyn Future<Output = Reservation> + Send>>;

impl Budget {
    /// A budget of `bytes` (at most [`MAX_BYTES`]).
    pub(crate) fn new(bytes: usize, metrics: BudgetMetrics) -> Self {
        Budget {
            permits: Arc::new(Semaphore::new(bytes.min(MAX_BYTES))),
            metrics,
        }
    }

    /// `bytes` now, if the budget has them and nobody waits before us.
    pub(super) fn try_reserve(&self, bytes: u32) -> Option<Reservation> {
        let permit = self.permits.clone().try_acquire_many_owned(bytes).ok()?;
        Some(Reservation::new(permit, &self.metrics))
    }

    /// `bytes` once the budget has them, after those who waited first.
    pub(super) fn reserve(&self, bytes: u32) -> Reserving {
        let permits = self.permits.clone();
        let metrics = self.metrics.clone();
        // tokio's clock, so that tests with paused time see the wait.
        let started = tokio::time::Instant::now();
        metrics.waits.inc();
        Box::pin(async move {
            // The semaphore is never closed.
            let permit = permits
                .acquire_many_owned(bytes)
                .await
                .unwrap_or_else(|_| unreachable!("the budget's semaphore is never closed"));
            metrics.wait_seconds.inc_by(started.elapsed().as_secs_f64());
            Reservation::new(permit, &metrics)
        })
    }

    /// Bytes reserved by no one now.
    #[cfg(test)]
    pub(super) fn free(&self) -> usize {
        self.permits.available_permits()
    }

    #[cfg(test)]
    pub(super) fn metrics(&self) -> &BudgetMetrics {
        &self.metrics
    }
}

/// One message's bytes, given back to the budget on drop.
#[derive(Debug)]
pub(super) struct Reservation {
    permit: OwnedSemaphorePermit,
    metrics: BudgetMetrics,
}

impl Reservation {
    fn new(permit: OwnedSemaphorePermit, metrics: &BudgetMetrics) -> Self {
        metrics.reserved.inc_by(permit.num_permits() as i64);
        Reservation {
            permit,
            metrics: metrics.clone(),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.metrics
            .reserved
            .dec_by(self.permit.num_permits() as i64);
    }
}
