//! The UDP fast path against the full handler: for every generated query
//! the fast path takes, its reply is byte for byte the full handler's
//! (same rotation); and on any bytes at all it never panics.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use meshdns::fast;
use meshdns::metrics::Metrics;
use meshdns::qname::Domain;
use meshdns::registry::Registry;
use meshdns::select;
use meshdns::snapshot::Snapshot;
use meshdns::zone::{self, Transport, Zone};
use meshdns_proto::model::{
    Cluster, ClusterName, Endpoint, LabelValue, Mode, Namespace, Policy, Port, Protocol,
    ServiceExport, ServiceKey, ServiceName,
};
use proptest::prelude::*;

fn export(ns: &str, name: &str, endpoints: Vec<Endpoint>) -> ServiceExport {
    ServiceExport::new(
        ServiceKey {
            namespace: Namespace::new(ns).unwrap(),
            name: ServiceName::new(name).unwrap(),
        },
        vec![Port {
            name: Some(meshdns_proto::model::PortName::new("http").unwrap()),
            protocol: Protocol::Tcp,
            port: NonZeroU16::new(80).unwrap(),
        }],
        Mode::Endpoints,
        vec![],
        endpoints,
        Policy::default(),
    )
    .unwrap()
}

fn endpoint(address: &str, ready: bool) -> Endpoint {
    Endpoint {
        ready,
        serving: ready,
        ..Endpoint::ready(address.parse().unwrap())
    }
}

/// Six clusters in two regions; `web.shop` everywhere with IPv4 and IPv6
/// endpoints (more than `--max-answers`), `db.data` in one cluster,
/// `api.shop` with no ready endpoint, `v6.shop` with IPv6 only.
fn snapshot() -> Arc<Snapshot> {
    let registry = Registry::new(5, false, Arc::new(Metrics::new()));
    for c in 0..6u8 {
        let region = if c < 3 { "east" } else { "west" };
        let session = registry
            .hello(
                Cluster {
                    name: ClusterName::new(&format!("c{c}")).unwrap(),
                    region: Some(LabelValue::new(region).unwrap()),
                    zone: Some(LabelValue::new(&format!("{region}-{}", c % 2)).unwrap()),
                    client_cidrs: vec![format!("10.{c}.0.0/16").parse().unwrap()],
                    version: "test".into(),
                },
                usize::MAX,
            )
            .0;
        let mut services = vec![export(
            "shop",
            "web",
            (0..c + 1)
                .map(|e| endpoint(&format!("100.{c}.0.{e}"), true))
                .chain((0..2).map(|e| endpoint(&format!("fd00::{c}:{e}"), true)))
                .collect(),
        )];
        if c == 0 {
            services.push(export("data", "db", vec![endpoint("100.9.0.1", true)]));
            services.push(export("shop", "api", vec![endpoint("100.9.0.2", false)]));
            services.push(export("shop", "v6", vec![endpoint("fd00::99", true)]));
        }
        registry
            .apply_snapshot(&session, services, &Default::default())
            .unwrap();
    }
    registry.snapshot().clone()
}

fn zones() -> Vec<Zone> {
    let domains = vec![
        Domain::parse("global").unwrap(),
        Domain::parse("clusterset.local").unwrap(),
    ];
    vec![
        Zone::new(domains.clone(), 5, 5, 8, 1).unwrap(),
        Zone::new(domains, 30, 10, 3, 4).unwrap(),
    ]
}

const NAMES: &[&str] = &[
    "web.shop.global",
    "db.data.global",
    "api.shop.global",
    "v6.shop.global",
    "nope.shop.global",
    "nope.nons.global",
    "web.shop.svc.clusterset.local",
    "nope.shop.svc.clusterset.local",
    "shop.global",
    "global",
    "c1.web.shop.global",
    "_http._tcp.web.shop.global",
    "web.shop.example",
    "web.shop.global.global",
];

/// An OPT record: (payload size, DO bit, Client Subnet as (address, prefix)).
type Opt = (u16, bool, Option<(IpAddr, u8)>);

#[derive(Debug, Clone)]
struct Ask {
    name: usize,
    case: Vec<bool>,
    qtype: u16,
    edns: Option<Opt>,
    source: IpAddr,
    rd: bool,
    cd: bool,
    rotation: usize,
}

fn ask() -> impl Strategy<Value = Ask> {
    let qtype = prop_oneof![Just(1u16), Just(28), Just(16), Just(33), Just(255), Just(6)];
    let subnet = prop_oneof![
        (0u8..6, 0u8..=32).prop_map(|(c, p)| (IpAddr::V4(Ipv4Addr::new(10, c, 1, 1)), p)),
        (0u8..=32).prop_map(|p| (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), p)),
        (0u8..=128).prop_map(|p| (IpAddr::V6("2001:db8::1".parse().unwrap()), p)),
    ];
    let edns = proptest::option::of((
        prop_oneof![Just(512u16), Just(1232), Just(4096), Just(100)],
        any::<bool>(),
        proptest::option::of(subnet),
    ));
    let source = prop_oneof![
        (0u8..6).prop_map(|c| IpAddr::V4(Ipv4Addr::new(10, c, 0, 9))),
        Just(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Just("::1".parse::<IpAddr>().unwrap()),
    ];
    (
        0..NAMES.len(),
        proptest::collection::vec(any::<bool>(), 40),
        qtype,
        edns,
        source,
        any::<bool>(),
        any::<bool>(),
        any::<usize>(),
    )
        .prop_map(|(name, case, qtype, edns, source, rd, cd, rotation)| Ask {
            name,
            case,
            qtype,
            edns,
            source,
            rd,
            cd,
            rotation,
        })
}

fn packet(ask: &Ask) -> Vec<u8> {
    let text: String = NAMES[ask.name]
        .chars()
        .zip(ask.case.iter().cycle())
        .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
        .collect();
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = ask.rd;
    m.metadata.checking_disabled = ask.cd;
    let mut q = Query::query(
        Name::from_ascii(format!("{text}.")).unwrap(),
        RecordType::from(ask.qtype),
    );
    q.set_query_class(DNSClass::IN);
    m.queries.push(q);
    if let Some((payload, dnssec_ok, subnet)) = ask.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        edns.set_dnssec_ok(dnssec_ok);
        if let Some((addr, prefix)) = subnet {
            let prefix = match addr {
                IpAddr::V4(_) => prefix.min(32),
                IpAddr::V6(_) => prefix,
            };
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
        }
        m.edns = Some(edns);
    }
    m.to_vec().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn fast_path_replies_as_the_full_handler(ask in ask()) {
        let snapshot = snapshot();
        for zone in zones() {
            let bytes = packet(&ask);
            let mut out = Vec::new();
            select::set_rotation(ask.rotation);
            let fast = fast::answer(&snapshot, &zone, &bytes, ask.source, &mut out);
            select::set_rotation(ask.rotation);
            let (full, full_outcome) =
                zone::respond(&snapshot, &zone, &bytes, ask.source, Transport::Udp).unwrap();
            if let Some(outcome) = fast {
                prop_assert_eq!(&out, &full, "{:?}", ask);
                prop_assert_eq!(outcome.rcode, full_outcome.rcode);
                prop_assert_eq!(outcome.qtype, full_outcome.qtype);
                prop_assert_eq!(outcome.ecs, full_outcome.ecs);
                prop_assert_eq!(outcome.fail_open, full_outcome.fail_open);
            }
        }
    }

    #[test]
    fn fast_path_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let snapshot = snapshot();
        let mut out = Vec::new();
        for zone in zones() {
            let _ = fast::answer(&snapshot, &zone, &bytes, IpAddr::V4(Ipv4Addr::LOCALHOST), &mut out);
        }
    }
}

/// The shapes that matter most are taken by the fast path at all.
#[test]
fn fast_path_takes_the_common_queries() {
    let snapshot = snapshot();
    let zone = &zones()[0];
    let base = Ask {
        name: 0,
        case: vec![false],
        qtype: 1,
        edns: None,
        source: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 9)),
        rd: true,
        cd: false,
        rotation: 0,
    };
    for ask in [
        base.clone(),
        Ask {
            qtype: 28,
            ..base.clone()
        },
        Ask {
            name: 4,
            ..base.clone()
        },
        Ask {
            name: 6,
            ..base.clone()
        },
        Ask {
            name: 2,
            ..base.clone()
        },
        Ask {
            edns: Some((
                1232,
                true,
                Some((IpAddr::V4(Ipv4Addr::new(10, 2, 0, 0)), 24)),
            )),
            ..base.clone()
        },
    ] {
        let mut out = Vec::new();
        assert!(
            fast::answer(&snapshot, zone, &packet(&ask), ask.source, &mut out).is_some(),
            "{ask:?}"
        );
    }
}
