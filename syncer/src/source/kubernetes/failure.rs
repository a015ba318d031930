//! Why a watcher failed, in the words an operator acts on: an API the
//! cluster does not serve (CRDs not installed), a verb the ServiceAccount
//! lacks, credentials refused, or an outage. The first two last until
//! someone acts; the rest pass by themselves.

use kube::runtime::watcher;

/// A resource a watcher lists and watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// The resource's plural, also the watcher's name.
    pub plural: &'static str,
    /// The API group (`""`: the core group).
    pub group: &'static str,
    pub version: &'static str,
}

impl Resource {
    pub const SERVICES: Resource = Resource {
        plural: "services",
        group: "",
        version: "v1",
    };
    pub const ENDPOINT_SLICES: Resource = Resource {
        plural: "endpointslices",
        group: "discovery.k8s.io",
        version: "v1",
    };
    pub const NODES: Resource = Resource {
        plural: "nodes",
        group: "",
        version: "v1",
    };
    pub const NAMESPACES: Resource = Resource {
        plural: "namespaces",
        group: "",
        version: "v1",
    };
    pub const SERVICE_EXPORTS: Resource = Resource {
        plural: "serviceexports",
        group: "multicluster.x-k8s.io",
        version: "v1alpha1",
    };

    /// `group/version`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// A watcher's failure, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchFailure {
    /// 404 on the collection: the API server does not serve this resource
    /// (for `serviceexports`, the MCS CRDs are not installed). Lasting.
    #[error(
        "not served (404): the API server has no {plural} in {api_version}; install its CRDs (retried with backoff)"
    )]
    NotServed {
        plural: &'static str,
        api_version: String,
    },
    /// 403: the ServiceAccount lacks a verb on the resource. Lasting.
    #[error(
        "forbidden (403): the ServiceAccount may not {verb} {plural} (API group {group:?}) at the cluster scope; grant it in the syncer's ClusterRole"
    )]
    Forbidden {
        verb: &'static str,
        plural: &'static str,
        group: &'static str,
    },
    /// 401: the credentials were refused (an expired or revoked token).
    #[error("unauthorized (401): the API server refused the syncer's credentials: {message}")]
    Unauthorized { message: String },
    /// 410: the watch's resourceVersion was compacted away; kube-runtime
    /// relists at once. Routine.
    #[error("expired (410): relisting")]
    Expired,
    /// Anything else: the API server unreachable, overloaded, a broken
    /// stream. Passes by itself; retried with backoff.
    #[error("{0}")]
    Other(String),
}

impl WatchFailure {
    /// Classifies a kube-runtime watcher error on `resource`.
    pub fn classify(resource: &Resource, error: &watcher::Error) -> Self {
        let (verb, status) = match error {
            watcher::Error::InitialListFailed(kube::Error::Api(s)) => ("list", Some(&**s)),
            watcher::Error::WatchStartFailed(kube::Error::Api(s))
            | watcher::Error::WatchFailed(kube::Error::Api(s)) => ("watch", Some(&**s)),
            watcher::Error::WatchError(s) => ("watch", Some(&**s)),
            _ => ("", None),
        };
        let Some(status) = status else {
            return WatchFailure::Other(error.to_string());
        };
        match status.code {
            404 => WatchFailure::NotServed {
                plural: resource.plural,
                api_version: resource.api_version(),
            },
            403 => WatchFailure::Forbidden {
                verb,
                plural: resource.plural,
                group: resource.group,
            },
            401 => WatchFailure::Unauthorized {
                message: status.message.clone(),
            },
            410 => WatchFailure::Expired,
            _ => WatchFailure::Other(error.to_string()),
        }
    }

    /// Lasts until someone acts (installs CRDs, grants a verb): a watcher
    /// that never listed and fails so is unavailable, not just late.
    pub fn is_lasting(&self) -> bool {
        matches!(
            self,
            WatchFailure::NotServed { .. } | WatchFailure::Forbidden { .. }
        )
    }

    /// The `reason` label of `meshdns_syncer_watch_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            WatchFailure::NotServed { .. } => "not_served",
            WatchFailure::Forbidden { .. } => "forbidden",
            WatchFailure::Unauthorized { .. } => "unauthorized",
            WatchFailure::Expired => "expired",
            WatchFailure::Other(_) => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            Status::failure("from the server", reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn classify() {
        let mcs = Resource::SERVICE_EXPORTS;
        let listed = |code, reason| {
            WatchFailure::classify(&mcs, &watcher::Error::InitialListFailed(api(code, reason)))
        };
        let not_served = listed(404, "NotFound");
        assert!(not_served.is_lasting());
        assert_eq!(
            not_served.to_string(),
            "not served (404): the API server has no serviceexports in multicluster.x-k8s.io/v1alpha1; install its CRDs (retried with backoff)"
        );
        let forbidden = WatchFailure::classify(
            &Resource::NODES,
            &watcher::Error::WatchStartFailed(api(403, "Forbidden")),
        );
        assert!(forbidden.is_lasting());
        assert!(
            forbidden
                .to_string()
                .contains("may not watch nodes (API group \"\")"),
            "{forbidden}"
        );
        assert!(
            listed(403, "Forbidden")
                .to_string()
                .contains("may not list serviceexports (API group \"multicluster.x-k8s.io\")")
        );
        assert_eq!(listed(401, "Unauthorized").reason(), "unauthorized");
        assert!(!listed(401, "Unauthorized").is_lasting());
        assert_eq!(listed(503, "ServiceUnavailable").reason(), "other");
        assert_eq!(
            WatchFailure::classify(
                &mcs,
                &watcher::Error::WatchError(
                    Status::failure("too old", "Expired").with_code(410).boxed()
                )
            ),
            WatchFailure::Expired
        );
        assert_eq!(
            WatchFailure::classify(&mcs, &watcher::Error::NoResourceVersion).reason(),
            "other"
        );
    }
}
