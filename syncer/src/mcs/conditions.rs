//! What the fleet thinks of one of this cluster's exports, as the MCS
//! API's ServiceExport conditions name it (mcs-api's `Accepted`,
//! `Conflicted` and `Exported` with their documented reasons, and the
//! deprecated `Valid` and `Conflict` beside them), and as Events in label
//! mode.

use meshdns_proto::wire;

use super::feed::Import;

/// One condition as the writers want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

fn condition(kind: &'static str, status: &'static str, reason: &str, message: String) -> Condition {
    Condition {
        kind,
        status,
        reason: reason.to_owned(),
        message,
    }
}

/// What this cluster's Service looks like, for `Valid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Missing,
    ExternalName,
    Present,
}

/// The verdict on one export: what conditions and Events say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    NoService,
    InvalidServiceType,
    /// The registry refused it, with its reason.
    Refused(String),
    /// Taken; in conflict on these fields, with the hub's messages.
    Conflict {
        reasons: String,
        message: String,
    },
    Exported {
        clusters: usize,
    },
    /// Not in the clusterset's view yet.
    Pending,
}

/// Judges `cluster`'s export from its Service, the registry's refusal and
/// the clusterset's view of the service.
pub fn verdict(
    cluster: &str,
    local: Local,
    refusal: Option<String>,
    import: Option<&Import>,
) -> Verdict {
    match local {
        Local::Missing => return Verdict::NoService,
        Local::ExternalName => return Verdict::InvalidServiceType,
        Local::Present => {}
    }
    if let Some(reason) = refusal {
        return Verdict::Refused(reason);
    }
    let Some(import) = import.filter(|i| i.clusters.iter().any(|c| c.cluster == cluster)) else {
        return Verdict::Pending;
    };
    let ours: Vec<&wire::ExportConflict> = import
        .conflicts
        .iter()
        .filter(|c| c.cluster == cluster)
        .collect();
    if ours.is_empty() {
        return Verdict::Exported {
            clusters: import.clusters.len(),
        };
    }
    let reasons: Vec<&str> = ours
        .iter()
        .map(|c| {
            if c.field == "ports" {
                "PortConflict"
            } else {
                "TypeConflict"
            }
        })
        .collect();
    let message = ours
        .iter()
        .map(|c| {
            format!(
                "{} conflict, the clusterset uses cluster {}'s: {}",
                c.field, c.winner, c.message
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Verdict::Conflict {
        reasons: reasons.join(","),
        message,
    }
}

/// The condition types written, current mcs-api first (`Accepted`,
/// `Conflicted`, `Exported`), then the deprecated ones the MCS KEP named
/// and older tools read (`Valid` mirrors `Accepted`, `Conflict` mirrors
/// `Conflicted`). mcs-api defines no `Ready`.
pub const TYPES: [&str; 5] = ["Accepted", "Conflicted", "Exported", "Valid", "Conflict"];

/// The current and the deprecated conditions from `accepted`,
/// `conflicted` and `exported` (`kind` is set here).
fn with_deprecated(
    accepted: Condition,
    conflicted: Condition,
    exported: Condition,
) -> [Condition; 5] {
    let valid = Condition {
        kind: "Valid",
        // The deprecated condition's True reason was its type's name.
        reason: if accepted.status == "True" {
            "Valid".into()
        } else {
            accepted.reason.clone()
        },
        ..accepted.clone()
    };
    let conflict = Condition {
        kind: "Conflict",
        ..conflicted.clone()
    };
    [accepted, conflicted, exported, valid, conflict]
}

/// The ServiceExport conditions for a verdict.
pub fn conditions(verdict: &Verdict) -> [Condition; 5] {
    let no_conflict = || condition("Conflicted", "False", "NoConflicts", String::new());
    let accepted = || condition("Accepted", "True", "Accepted", String::new());
    let (a, c, e) = match verdict {
        Verdict::NoService => {
            let m = "no Service of this name in this namespace".to_owned();
            (
                condition("Accepted", "False", "NoService", m.clone()),
                no_conflict(),
                condition("Exported", "False", "Failed", m),
            )
        }
        Verdict::InvalidServiceType => {
            let m = "an ExternalName Service cannot be exported".to_owned();
            (
                condition("Accepted", "False", "InvalidServiceType", m.clone()),
                no_conflict(),
                condition("Exported", "False", "Failed", m),
            )
        }
        Verdict::Refused(reason) => (
            condition("Accepted", "False", "RegistryRefused", reason.clone()),
            no_conflict(),
            condition("Exported", "False", "Failed", reason.clone()),
        ),
        Verdict::Conflict { reasons, message } => (
            accepted(),
            condition("Conflicted", "True", reasons, message.clone()),
            condition(
                "Exported",
                "True",
                "Exported",
                "exported to the clusterset, in conflict".into(),
            ),
        ),
        Verdict::Exported { clusters } => (
            accepted(),
            no_conflict(),
            condition(
                "Exported",
                "True",
                "Exported",
                format!("exported to the clusterset ({clusters} clusters export it)"),
            ),
        ),
        Verdict::Pending => {
            let m = "the registry has not taken the export yet".to_owned();
            (
                accepted(),
                condition("Conflicted", "Unknown", "Pending", m.clone()),
                condition("Exported", "Unknown", "Pending", m),
            )
        }
    };
    with_deprecated(a, c, e)
}

/// Every condition Unknown: no registry has answered for too long.
pub fn unknown(outage: &str) -> [Condition; 5] {
    TYPES.map(|kind| condition(kind, "Unknown", "RegistryUnreachable", outage.to_owned()))
}
