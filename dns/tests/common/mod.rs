//! The small fleet the registry's model tests (`registry_model.rs`,
//! `restore_model.rs`) generate their exports into.

use meshdns_proto::fixtures;
use meshdns_proto::model::{Cluster, ServiceKey};

/// Services each generated cluster may export: `ns/s0` .. `ns/s3`.
pub const SERVICES: u8 = 4;

/// Service `s`'s key.
pub fn key(s: u8) -> ServiceKey {
    fixtures::key("ns", &format!("s{s}"))
}

/// Cluster `c`: `c000`, `c001`, …, in two regions and three zones, so the
/// models see every locality tier.
pub fn cluster(c: usize) -> Cluster {
    Cluster {
        region: Some(fixtures::label(&format!("r{}", c % 2))),
        zone: Some(fixtures::label(&format!("z{}", c % 3))),
        ..fixtures::cluster(&format!("c{c:03}"))
    }
}
