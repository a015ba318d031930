//! Export sources. Each produces the cluster's whole [`ExportSet`] on a
//! `watch` channel: `None` until the first good read (or, for Kubernetes,
//! until every watcher has listed once).

pub mod fields;
pub mod file;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
#[cfg(feature = "kubernetes")]
pub mod selector;

use std::sync::Arc;

use meshdns_proto::model::{DEFAULT_WEIGHT, ExportSet};
use tokio::sync::watch;

/// What a source publishes: the latest complete export set.
pub type Exports = watch::Receiver<Option<Arc<ExportSet>>>;

/// Values given on the command line, which win over the file's own.
#[derive(Debug, Clone)]
pub struct Overrides {
    pub cluster: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// The cloud provider (`--provider`); else the file's, or the Nodes'
    /// `meshdns.io/provider` label.
    pub provider: Option<String>,
    pub client_cidrs: Vec<String>,
    pub version: String,
    /// The weight of an endpoint nothing else weighs (`--weight`): a
    /// Service annotation, a file's service or endpoint `weight` win.
    pub weight: u32,
    /// Announce the Nodes' addresses (`--announce-nodes`, the Kubernetes
    /// source): the node tier is opt-in.
    pub announce_nodes: bool,
}

impl Default for Overrides {
    fn default() -> Self {
        Overrides {
            cluster: None,
            region: None,
            zone: None,
            provider: None,
            client_cidrs: Vec::new(),
            version: String::new(),
            weight: DEFAULT_WEIGHT,
            announce_nodes: false,
        }
    }
}
