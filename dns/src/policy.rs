//! `--policy FILE`: the hub's traffic policy — per cluster weight, drain
//! and provider; per service weight and drain overrides, failover order,
//! primary and min-healthy; a default failover order per asker region.
//!
//! It is a file of its own, apart from the fleet file (`--clusters`):
//! the fleet file is the trust boundary (what a cluster may claim: its
//! client CIDRs, its endpoint addresses, its namespaces), owned by
//! security and changed rarely through their review; the policy is where
//! traffic goes, which operators change often — a drain in steps during a
//! migration, a failover order during an incident — through their own
//! change process. One file would put the trust boundary into every drain
//! change. The two compose: a cluster the fleet file refuses exports
//! nothing for the policy to weigh.
//!
//! - [`file`]: the YAML → [`FleetPolicy`], every error naming its field.
//! - [`yaml`]: the file's shapes, typed and bounded (no alias blow-up).
//! - [`watch`]: the file read at start and re-read on change; a bad file
//!   keeps the last good one; every reload logged and counted.
//! - [`diff`]: what changed, as the log lines say it.
//!
//! The policy reaches the DNS answers through
//! [`Registry::set_policy`](crate::registry::Registry::set_policy), followers
//! through Watch (the Reset's `policy`, then a `policy` event per change),
//! and restarts through the state file, which keeps it.

pub mod diff;
pub mod file;
pub mod watch;
pub mod yaml;

pub use meshdns_proto::model::FleetPolicy;

use meshdns_proto::wire;

/// The SHA-256 (hex) of the policy's canonical form, its wire encoding
/// (maps in key order, so equal policies hash alike): what
/// `meshdns_policy_info` and `meshdns status` show, the same on the hub
/// and its followers.
pub fn sha256(policy: &FleetPolicy) -> String {
    let bytes = prost::Message::encode_to_vec(&wire::FleetPolicy::from(policy));
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
