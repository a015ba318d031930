//! A Snapshot in parts and a big Delta as several Deltas, so that no
//! request passes `--max-message-bytes`.
//!
//! A Snapshot's parts are one replacement: the registry applies them
//! together when the last (the one without `more`) arrives. A Delta is not
//! atomic across messages: each of its parts is applied as it comes, which
//! is fine because each is a correct change on its own; removals go first,
//! so a cluster at its services limit makes room before it adds.

use meshdns_proto::parts::{Split, field_len, mark_more, split_changes};
use meshdns_proto::wire;

/// Bytes kept for what wraps a part's items in an `ExportRequest`: the
/// generation (at most 11), the message's tag and length (at most 6) and
/// `more` (2), or a Delta's `observed_unix_ms` (at most 11).
pub const ENVELOPE: usize = 32;

/// The smallest `--max-message-bytes` that leaves room for items.
pub const MIN_MESSAGE_BYTES: usize = 1024;

/// The parts of a Snapshot of `services`, each request at most `max_bytes`
/// (a service bigger than that goes alone in its part). An empty set is
/// one empty part.
pub fn snapshot_parts(
    services: impl Iterator<Item = wire::ServiceExport>,
    max_bytes: usize,
) -> impl Iterator<Item = wire::Snapshot> {
    let mut services = services.peekable();
    let empty = services.peek().is_none().then(Vec::new);
    let runs = Split::new(services, max_bytes.saturating_sub(ENVELOPE), field_len).chain(empty);
    mark_more(
        runs.map(|services| wire::Snapshot {
            services,
            more: false,
        }),
        |part, more| part.more = more,
    )
}

/// `upserts` and `removals` as Deltas of at most `max_bytes` each,
/// removals first; none when there is no change.
pub fn delta_parts(
    upserts: Vec<wire::ServiceExport>,
    removals: Vec<wire::ServiceKey>,
    max_bytes: usize,
) -> impl Iterator<Item = wire::Delta> {
    split_changes(
        removals.into_iter(),
        upserts.into_iter(),
        max_bytes.saturating_sub(ENVELOPE),
    )
    .map(|run| wire::Delta {
        upserts: run.upserts,
        removals: run.removals,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshdns_proto::fixtures;
    use meshdns_proto::wire::export_request::Message as Req;
    use prost::Message;

    fn service(name: &str, endpoints: usize) -> wire::ServiceExport {
        // No ports, mode unset: these tests measure sizes, not validity.
        wire::ServiceExport {
            key: Some(fixtures::wire_key("shop", name)),
            endpoints: (0..endpoints)
                .map(|i| wire::Endpoint {
                    hostname: format!("pod-{i}"),
                    ..fixtures::wire_endpoint(format!("10.0.{}.{}", i / 250, i % 250))
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The encoded size of a part as the syncer sends it.
    fn request_len(message: Req) -> usize {
        wire::ExportRequest {
            generation: u64::MAX,
            message: Some(message),
        }
        .encoded_len()
    }

    fn names(services: &[wire::ServiceExport]) -> Vec<String> {
        services
            .iter()
            .map(|s| s.key.clone().unwrap_or_default().name)
            .collect()
    }

    #[test]
    fn a_snapshot_splits_under_the_budget_with_every_service_once() {
        let budget = 16 * 1024;
        let services: Vec<_> = (0..200)
            .map(|i| service(&format!("s{i}"), i % 40))
            .collect();
        let whole = request_len(Req::Snapshot(wire::Snapshot {
            services: services.clone(),
            more: false,
        }));
        assert!(whole > 4 * budget, "the set is several parts: {whole}");
        let parts: Vec<_> = snapshot_parts(services.clone().into_iter(), budget).collect();
        assert!(parts.len() >= 4, "{} parts", parts.len());
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.more, i + 1 < parts.len(), "more on all but the last");
            assert!(!part.services.is_empty());
            let len = request_len(Req::Snapshot(part.clone()));
            assert!(len <= budget, "part {i}: {len} > {budget}");
        }
        let sent: Vec<_> = parts.iter().flat_map(|p| names(&p.services)).collect();
        assert_eq!(sent, names(&services), "every service once, in order");
    }

    #[test]
    fn a_service_bigger_than_the_budget_goes_alone() {
        let budget = MIN_MESSAGE_BYTES;
        let services = vec![service("a", 1), service("big", 200), service("b", 1)];
        let parts: Vec<_> = snapshot_parts(services.into_iter(), budget).collect();
        let shape: Vec<_> = parts.iter().map(|p| (names(&p.services), p.more)).collect();
        assert_eq!(
            shape,
            vec![
                (vec!["a".to_owned()], true),
                (vec!["big".to_owned()], true),
                (vec!["b".to_owned()], false),
            ]
        );
    }

    #[test]
    fn an_empty_set_is_one_empty_part() {
        let parts: Vec<_> = snapshot_parts(std::iter::empty(), 4096).collect();
        assert_eq!(parts, vec![wire::Snapshot::default()]);
    }

    #[test]
    fn a_big_delta_is_several_deltas_removals_first() {
        let budget = 8 * 1024;
        let upserts: Vec<_> = (0..100).map(|i| service(&format!("u{i}"), 20)).collect();
        let removals: Vec<_> = (0..300)
            .map(|i| wire::ServiceKey {
                namespace: "shop".into(),
                name: format!("r{i}"),
            })
            .collect();
        let parts: Vec<_> = delta_parts(upserts.clone(), removals.clone(), budget).collect();
        assert!(parts.len() > 3, "{} parts", parts.len());
        for part in &parts {
            assert!(request_len(Req::Delta(part.clone())) <= budget);
        }
        let got_removals: Vec<_> = parts.iter().flat_map(|p| p.removals.clone()).collect();
        let got_upserts: Vec<_> = parts.iter().flat_map(|p| names(&p.upserts)).collect();
        assert_eq!(got_removals, removals);
        assert_eq!(got_upserts, names(&upserts));
        // Removals first: no part adds before every removal went.
        let first_upsert = parts.iter().position(|p| !p.upserts.is_empty());
        let last_removal = parts.iter().rposition(|p| !p.removals.is_empty());
        assert!(first_upsert >= last_removal);
        assert_eq!(delta_parts(vec![], vec![], budget).count(), 0);
    }
}
