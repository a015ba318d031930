//! `export-to`: whether an asker may see a service at all. Outside every
//! place the service lists (and for an asker of no known place) the
//! service's names do not exist: NXDOMAIN, with an ECS scope that says
//! the answer depends on where the asker is.

use meshdns_proto::model::Scope;

use crate::locality::{AskerPlace, Locality};
use crate::snapshot::ServiceView;

/// Whether an asker at `place` may see `view`.
pub fn exported_to(view: &ServiceView, locality: &Locality, place: Option<&AskerPlace>) -> bool {
    if view.export_to.is_empty() {
        return true;
    }
    let Some(asker) = place.and_then(|p| locality.place(p.cluster)) else {
        return false;
    };
    let named =
        |of: &Option<(u32, String)>, name: &str| of.as_ref().is_some_and(|(_, n)| n == name);
    // Every exporting cluster's list must allow the asker.
    view.export_to.iter().all(|list| {
        list.iter().any(|scope| match scope {
            Scope::Cluster(c) => asker.name == *c,
            Scope::Zone(z) => named(&asker.zone, z.as_str()),
            Scope::Region(r) => named(&asker.region, r.as_str()),
            Scope::Provider(p) => named(&asker.provider, p.as_str()),
        })
    })
}
