//! The checks the fuzz targets (`fuzz/`) run on arbitrary input, shared
//! with `tests/tests/e2e/fuzz_corpus.rs`, which replays every kept corpus
//! file through them in the normal suite.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use meshdns::authority::{Authority, Transport};
use meshdns::metrics::Metrics;
use meshdns::qname::Domain;
use meshdns::registry::Registry;
use meshdns_proto::model::{Cluster, ServiceExport};
use meshdns_proto::wire::{self, export_request::Message as Req};
use prost::Message;

struct Fixture {
    registry: Registry,
    zone: Authority,
}

/// A registry holding a small fleet, and a zone serving global,
/// clusterset.local and the reverse zones.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let registry = Registry::new(5, true, Arc::new(Metrics::new()));
        let set = crate::fleet::west_1();
        for text in [crate::fleet::EAST_1, crate::fleet::EAST_2, set.as_str()] {
            let (exports, _) = meshdns_syncer::source::file::parse(text, &Default::default(), None)
                .expect("fleet file");
            let session = registry.hello(exports.cluster.clone(), usize::MAX).0;
            let services = exports.services.values().map(|s| (**s).clone()).collect();
            registry
                .apply_snapshot(&session, services, &BTreeSet::new())
                .expect("applied");
        }
        let mut domains = vec![
            Domain::parse("global").expect("domain"),
            Domain::parse("clusterset.local").expect("domain"),
        ];
        domains.extend(Domain::reverse());
        let zone = Authority::new(domains, 5, 5, 8, 1).expect("zone");
        Fixture { registry, zone }
    })
}

/// The largest UDP reply `request` may get: 512 bytes without EDNS (RFC
/// 1035), else its advertised payload between 512 and our 1,232.
fn udp_limit(request: &[u8]) -> usize {
    match hickory_proto::op::Message::from_vec(request) {
        Ok(m) => m
            .edns
            .map_or(512, |e| usize::from(e.max_payload()).clamp(512, 1232)),
        // Unparsable: a header-only FORMERR, far under any limit.
        Err(_) => 512,
    }
}

/// Arbitrary bytes as a DNS request, over UDP and TCP: a reply to every
/// query (a full header with QR clear; none to a runt or a response), that
/// decodes completely, carries the request's ID, and fits UDP: 512 bytes
/// without EDNS, the advertised payload (at most 1,232) with it.
pub fn dns_request(data: &[u8]) {
    let f = fixture();
    let snapshot = f.registry.snapshot();
    let due = data.len() >= 12 && data[2] & 0x80 == 0;
    for transport in [Transport::Udp, Transport::Tcp] {
        let reply = meshdns::authority::respond(
            &snapshot,
            &f.zone,
            data,
            "127.0.0.2".parse().expect("ip"),
            transport,
        );
        let Some((reply, _)) = reply else {
            assert!(!due, "no {transport:?} reply to a query: {data:?}");
            continue;
        };
        assert!(
            due,
            "a {transport:?} reply to a runt or a response: {data:?}"
        );
        let message = crate::dns::strict(&reply)
            .unwrap_or_else(|e| panic!("malformed reply to {data:?}: {e}"));
        assert_eq!(&reply[..2], &data[..2], "reply ID");
        assert!(message.metadata.message_type == hickory_proto::op::MessageType::Response);
        if transport == Transport::Udp {
            let limit = udp_limit(data);
            assert!(
                reply.len() <= limit,
                "UDP reply of {} bytes where the limit is {limit}: {data:?}",
                reply.len()
            );
        }
    }
}

/// A floor under what a decoded request holds: its structs, counted
/// from the decoded value itself (an oracle independent of the wire walk).
fn decoded_floor(request: &wire::ExportRequest) -> usize {
    use std::mem::size_of;
    let service = |s: &wire::ServiceExport| {
        size_of::<wire::ServiceExport>()
            + s.ports.len() * size_of::<wire::Port>()
            + s.cluster_ips.len() * size_of::<String>()
            + s.endpoints
                .iter()
                .map(|e| size_of::<wire::Endpoint>() + e.addresses.len() * size_of::<String>())
                .sum::<usize>()
    };
    match &request.message {
        Some(Req::Snapshot(s)) => s.services.iter().map(service).sum(),
        Some(Req::Delta(d)) => {
            d.upserts.iter().map(service).sum::<usize>()
                + d.removals.len() * size_of::<wire::ServiceKey>()
        }
        Some(Req::Hello(h)) => h.client_cidrs.len() * size_of::<String>(),
        _ => 0,
    }
}

/// Arbitrary bytes as an Export request: the hub's pre-decode check
/// (`Checked`) either refuses it or lets through only what decodes within
/// the budget; what decodes validates to a model or a precise error,
/// never a panic.
pub fn export_message(data: &[u8]) {
    use meshdns_proto::codec::Checked;
    let passed = <wire::ExportRequest as Checked>::check(data, false).is_ok();
    let Ok(request) = wire::ExportRequest::decode(data) else {
        return;
    };
    if passed {
        let floor = decoded_floor(&request);
        let allowed = meshdns_proto::budget::allowed(data.len());
        assert!(
            floor <= allowed,
            "{} bytes passed the check but decode to at least {floor} (allowed {allowed})",
            data.len()
        );
    }
    // What validates round-trips: model -> wire -> bytes -> wire -> model
    // gives the same model, and what fails says why.
    let check = |services: &[wire::ServiceExport]| {
        for s in services {
            match ServiceExport::try_from(s) {
                Ok(model) => {
                    let wire = wire::ServiceExport::from(&model);
                    let decoded = wire::ServiceExport::decode(wire.encode_to_vec().as_slice())
                        .expect("our own encoding decodes");
                    assert_eq!(decoded, wire, "wire round trip");
                    let again = ServiceExport::try_from(&decoded)
                        .unwrap_or_else(|e| panic!("{model:?} written as {wire:?}: {e}"));
                    assert_eq!(again, model, "model -> wire -> model");
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    };
    match request.message {
        Some(Req::Hello(h)) => {
            if let Ok(cluster) = Cluster::try_from(&h) {
                let again = Cluster::try_from(&wire::Hello::from(&cluster))
                    .expect("a Hello written from a cluster reads back");
                assert_eq!(again, cluster, "cluster -> Hello -> cluster");
            }
        }
        Some(Req::Snapshot(s)) => check(&s.services),
        Some(Req::Delta(d)) => {
            check(&d.upserts);
            for k in &d.removals {
                if let Ok(key) = meshdns_proto::model::ServiceKey::try_from(k) {
                    let again =
                        meshdns_proto::model::ServiceKey::try_from(&wire::ServiceKey::from(&key))
                            .expect("a key written from a key reads back");
                    assert_eq!(again, key);
                }
            }
        }
        _ => {}
    }
}

/// Arbitrary bytes as an export file: parses or fails with a message;
/// what parses round-trips: file -> model -> file -> model gives the same
/// model, and writing it again the same file.
pub fn file_source(data: &[u8]) {
    use meshdns_syncer::source::file::parse;
    let text = String::from_utf8_lossy(data);
    match parse(&text, &Default::default(), None) {
        Ok((set, _)) => {
            let written = crate::export_file::render(&set);
            let (again, refused) = parse(&written, &Default::default(), None)
                .unwrap_or_else(|e| panic!("{written}\ndoes not parse: {e}"));
            assert!(refused.is_empty(), "{written}\nrefused: {refused:?}");
            assert_eq!(again, set, "file -> model -> file -> model:\n{written}");
            assert_eq!(crate::export_file::render(&again), written);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
