//! One in-process publisher per synthetic cluster, as a syncer would run
//! it: plaintext to the hub, the syncer's own reconnect backoff, and a
//! watch channel per cluster through which a bench hands over a changed
//! export set.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use meshdns_proto::client::ClientAuth;
use meshdns_proto::model::{ExportSet, ServiceExport};
use meshdns_syncer::publish::{self, Backoff, PublishConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Plaintext client credentials, as every bench talks to its hub.
pub fn insecure() -> ClientAuth {
    ClientAuth {
        insecure: true,
        ..ClientAuth::default()
    }
}

/// A publisher of `url` with the benches' settings: plaintext, a 5 s
/// heartbeat, reconnects after 100 ms to 2 s.
pub fn config(url: &str) -> PublishConfig {
    PublishConfig {
        url: url.to_owned(),
        auth: insecure(),
        heartbeat: Duration::from_secs(5),
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
        max_message_bytes: publish::DEFAULT_MAX_MESSAGE_BYTES,
        refusals: Default::default(),
    }
}

/// The publishers of a fleet, cluster `c` publishing `sets[c]`.
#[derive(Debug)]
pub struct Publishers {
    sets: Vec<Arc<ExportSet>>,
    senders: Vec<watch::Sender<Option<Arc<ExportSet>>>>,
}

impl Publishers {
    /// Spawns one publisher of `url` per set, each until `shutdown`.
    pub fn spawn(sets: Vec<ExportSet>, url: &str, shutdown: &CancellationToken) -> Self {
        let mut publishers = Publishers {
            sets: Vec::with_capacity(sets.len()),
            senders: Vec::with_capacity(sets.len()),
        };
        for set in sets {
            let set = Arc::new(set);
            let (tx, rx) = watch::channel(Some(set.clone()));
            publishers.senders.push(tx);
            publishers.sets.push(set);
            tokio::spawn(publish::run(config(url), rx, shutdown.clone()));
        }
        publishers
    }

    /// Puts `export` into cluster `c`'s set, replacing the service's
    /// previous export; the publisher sees it at [`Self::send`]. Returns
    /// the addresses the service's export now offers (its ready ones).
    pub fn stage(&mut self, c: usize, export: ServiceExport) -> BTreeSet<IpAddr> {
        let ready = export
            .endpoints()
            .iter()
            .filter(|e| e.ready)
            .flat_map(|e| e.addresses.iter().copied())
            .collect();
        let mut set = (*self.sets[c]).clone();
        set.services.insert(export.key().clone(), Arc::new(export));
        self.sets[c] = Arc::new(set);
        ready
    }

    /// Hands cluster `c`'s staged set to its publisher.
    pub fn send(&self, c: usize) {
        self.senders[c].send_replace(Some(self.sets[c].clone()));
    }
}
