//! Export messages checked before they reach the registry: each service
//! on its own, so one bad item never takes the rest down.

use std::collections::BTreeSet;

use meshdns_proto::model::{ServiceExport, ServiceKey};
use meshdns_proto::wire;

/// A refused item: what goes back to the syncer, and its kind for metrics.
pub(super) type Refused = (wire::Refusal, &'static str);

/// Validates each service on its own: the valid ones, and a refusal for
/// each invalid one. A refused service whose key is valid is also returned
/// in `keep`, so a Snapshot does not withdraw its last good version.
/// Refuses `service` for `reason` (counted under `kind`); its previous
/// version, if its key is readable, is kept.
fn refuse(
    service: &wire::ServiceExport,
    reason: String,
    kind: &'static str,
    refusals: &mut Vec<Refused>,
    keep: &mut BTreeSet<ServiceKey>,
) {
    if let Some(key) = service
        .key
        .as_ref()
        .and_then(|k| ServiceKey::try_from(k).ok())
    {
        keep.insert(key);
    }
    let refusal = wire::Refusal {
        key: service.key.clone(),
        reason,
    };
    refusals.push((refusal, kind));
}

pub(super) fn validate(
    services: &[wire::ServiceExport],
    max_endpoints: usize,
) -> (Vec<ServiceExport>, Vec<Refused>, BTreeSet<ServiceKey>) {
    let mut valid = Vec::with_capacity(services.len());
    let mut refusals = Vec::new();
    let mut keep = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, service) in services.iter().enumerate() {
        if service.endpoints.len() > max_endpoints {
            let reason = format!(
                "services[{i}]: {} endpoints is over the --max-endpoints-per-service limit ({max_endpoints})",
                service.endpoints.len()
            );
            refuse(service, reason, "limit_endpoints", &mut refusals, &mut keep);
            continue;
        }
        let result = ServiceExport::try_from(service).and_then(|s| {
            if seen.insert(s.key().clone()) {
                Ok(s)
            } else {
                Err(meshdns_proto::InvalidField::new(
                    "key",
                    meshdns_proto::error::Problem::DuplicateService(s.key().to_string()),
                ))
            }
        });
        match result {
            Ok(s) => valid.push(s),
            Err(e) => refuse(
                service,
                format!("services[{i}]: {e}"),
                e.problem.kind(),
                &mut refusals,
                &mut keep,
            ),
        }
    }
    (valid, refusals, keep)
}

pub(super) fn removals(keys: &[wire::ServiceKey]) -> (Vec<ServiceKey>, Vec<Refused>) {
    let mut valid = Vec::new();
    let mut refusals = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match ServiceKey::try_from(key) {
            Ok(k) => valid.push(k),
            Err(e) => refusals.push((
                wire::Refusal {
                    key: Some(key.clone()),
                    reason: format!("removals[{i}]: {e}"),
                },
                e.problem.kind(),
            )),
        }
    }
    (valid, refusals)
}

/// Refusals for services over `--max-services-per-cluster`.
pub(super) fn over_limit(keys: Vec<ServiceKey>, max: usize) -> Vec<Refused> {
    keys.iter()
        .map(|k| {
            let refusal = wire::Refusal {
                key: Some(k.into()),
                reason: format!("{k}: the cluster already exports {max} services, the --max-services-per-cluster limit"),
            };
            (refusal, "limit_services")
        })
        .collect()
}
