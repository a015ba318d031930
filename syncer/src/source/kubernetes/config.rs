//! The Kubernetes source's settings, and the API client they make.

use std::path::PathBuf;
use std::time::Duration;

use kube::Client;

use crate::error::Error;
use crate::source::Overrides;
use crate::source::selector::Selector;

/// Settings of the Kubernetes source.
#[derive(Debug, Clone)]
pub struct KubeSource {
    pub kubeconfig: Option<PathBuf>,
    pub overrides: Overrides,
    pub selector: Selector,
    pub namespaces: Vec<String>,
    pub namespace_selector: Option<Selector>,
    pub mcs: bool,
    /// Longest a change waits to be coalesced with others.
    pub coalesce: Duration,
    /// Shortest time between two announcements of changed node addresses
    /// (`--node-announce-interval`): each reconnects the export stream.
    pub node_announce_interval: Duration,
}

pub async fn client(kubeconfig: Option<&PathBuf>) -> Result<Client, Error> {
    let fail = |problem: String| Error::Config {
        field: "--kubeconfig".into(),
        problem,
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| fail(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| fail(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            fail(format!(
                "no in-cluster config and no usable KUBECONFIG: {e}"
            ))
        })?,
    };
    Client::try_from(config).map_err(|e| fail(e.to_string()))
}
