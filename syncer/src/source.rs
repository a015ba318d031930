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

use meshdns_proto::model::ExportSet;
use tokio::sync::watch;

/// What a source publishes: the latest complete export set.
pub type Exports = watch::Receiver<Option<Arc<ExportSet>>>;

/// Values given on the command line, which win over the file's own.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub cluster: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub client_cidrs: Vec<String>,
    pub version: String,
}
