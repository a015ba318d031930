//! The UDP fast path against the full handler: for every generated query
//! the fast path takes, its reply is byte for byte the full handler's
//! (same rotation); and on any bytes at all it never panics.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use meshdns::authority::{self, Authority, Transport};
use meshdns::cookie::Cookies;
use meshdns::fast;
use meshdns::metrics::Metrics;
use meshdns::qname::Domain;
use meshdns::registry::{Liveness, Registry};
use meshdns::select;
use meshdns::snapshot::Snapshot;
use meshdns_proto::fixtures;
use meshdns_proto::model::{
    Affinity, Cluster, ClusterName, ClusterPolicy, Endpoint, FleetPolicy, Hostname, LabelValue,
    MinHealthy, Mode, Namespace, NodeAddresses, NodeName, Policy, RegionPolicy, Scope,
    ServiceExport, ServiceKey, ServiceName, ServicePolicy,
};
use proptest::prelude::*;

fn export(ns: &str, name: &str, endpoints: Vec<Endpoint>) -> ServiceExport {
    export_with(ns, name, endpoints, Affinity::default())
}

fn export_with(
    ns: &str,
    name: &str,
    endpoints: Vec<Endpoint>,
    affinity: Affinity,
) -> ServiceExport {
    export_policy(
        ns,
        name,
        endpoints,
        Policy {
            affinity,
            ..Policy::default()
        },
    )
}

/// An export under a traffic policy, its port named `http`.
fn export_policy(ns: &str, name: &str, endpoints: Vec<Endpoint>, policy: Policy) -> ServiceExport {
    ServiceExport::new(
        fixtures::key(ns, name),
        vec![fixtures::named_http_port()],
        Mode::Endpoints,
        vec![],
        endpoints,
        policy,
    )
    .unwrap()
}

/// A ready endpoint of weight `weight` on node `n<node>`.
fn weighted(address: &str, weight: u32, node: u8) -> Endpoint {
    Endpoint {
        weight,
        node: Some(NodeName::new(&format!("n{node}")).unwrap()),
        ..Endpoint::ready(address.parse().unwrap())
    }
}

fn region(r: &str) -> Scope {
    Scope::Region(LabelValue::new(r).unwrap())
}

fn endpoint(address: &str, ready: bool) -> Endpoint {
    Endpoint {
        ready,
        serving: ready,
        ..Endpoint::ready(address.parse().unwrap())
    }
}

/// Serving (terminating) but not ready: answered only when no endpoint
/// of the service is ready.
fn serving_unready(address: &str) -> Endpoint {
    Endpoint {
        ready: false,
        serving: true,
        ..Endpoint::ready(address.parse().unwrap())
    }
}

const AFFINITIES: [(&str, Affinity); 5] = [
    ("near", Affinity::Nearest),
    ("clus", Affinity::Cluster),
    ("zone", Affinity::Zone),
    ("region", Affinity::Region),
    ("every", Affinity::None),
];

/// Eight clusters in two regions, two zones each; clusters c6 and c7
/// (west) are stale. Each cluster's askers are `10.<c>.0.0/16` and
/// `fd10:<c>::/32`. Services:
/// - `web.shop` everywhere with IPv4 and IPv6 endpoints (more than
///   `--max-answers`); `db.data` in one cluster; `api.shop` with no
///   ready endpoint; `v6.shop` with IPv6 only;
/// - `<affinity>.pol` for every affinity, in c1 (one endpoint), c2
///   (three), c4 (two) and c6 (stale): tiers fall short of
///   `min_healthy` and spill over, or stop at the affinity's boundary;
/// - `gone.shop` only in the stale clusters: served anyway (fail open);
/// - `drain.shop`: serving-but-unready endpoints in c3 only, and
///   `mixed.shop`: those in c3 beside ready ones in c5;
/// - the traffic policy, in namespace `tp`: `wt` with weights 0 to 40 in
///   c1, c2 and c4 (c2 drained 50% and c5 100% by the policy file, which
///   also places c3 with provider `aws`); `fo` with a failover order
///   (`region:west`) and min-healthy 3; `pri` pinned to region west;
///   `mh` with min-healthy 50% and some endpoints unready; `ex` exported
///   to c1 and region west only; `node` with affinity node (each
///   cluster announces node `n<c>` at `10.<c>.0.9` and `fd10:<c>::9`,
///   the sources asked from); `prov` with affinity provider (even
///   clusters are `aws`, odd `gcp`); `last` with weight-0 endpoints only;
///   and a region default order (east → west) for services without one.
fn snapshot() -> Arc<Snapshot> {
    static FLEET: LazyLock<Arc<Snapshot>> = LazyLock::new(fleet);
    FLEET.clone()
}

fn fleet() -> Arc<Snapshot> {
    let registry = Registry::new(5, true, Arc::new(Metrics::new()));
    let hello = |c: u8| {
        let region = if c < 4 { "east" } else { "west" };
        registry
            .hello(
                Cluster {
                    name: ClusterName::new(&format!("c{c}")).unwrap(),
                    region: Some(LabelValue::new(region).unwrap()),
                    zone: Some(LabelValue::new(&format!("{region}-{}", c % 2)).unwrap()),
                    client_cidrs: vec![
                        format!("10.{c}.0.0/16").parse().unwrap(),
                        format!("fd10:{c}::/32").parse().unwrap(),
                    ],
                    version: "test".into(),
                    provider: Some(
                        LabelValue::new(if c.is_multiple_of(2) { "aws" } else { "gcp" }).unwrap(),
                    ),
                    nodes: vec![NodeAddresses {
                        name: NodeName::new(&format!("n{c}")).unwrap(),
                        addresses: vec![
                            format!("10.{c}.0.9").parse().unwrap(),
                            format!("fd10:{c}::9").parse().unwrap(),
                        ],
                    }],
                },
                usize::MAX,
            )
            .0
    };
    let services = |c: u8| {
        let mut services = vec![export(
            "shop",
            "web",
            (0..c + 1)
                .map(|e| endpoint(&format!("100.{c}.0.{e}"), true))
                .chain((0..2).map(|e| endpoint(&format!("fd00::{c}:{e}"), true)))
                .collect(),
        )];
        let policy_endpoints = match c {
            1 => 1,
            2 => 3,
            4 => 2,
            6 => 2,
            _ => 0,
        };
        if policy_endpoints > 0 {
            for (name, affinity) in AFFINITIES {
                services.push(export_with(
                    "pol",
                    name,
                    (0..policy_endpoints)
                        .map(|e| endpoint(&format!("100.{c}.1.{e}"), true))
                        .chain([endpoint(&format!("fd00::{c}:1:0"), true)])
                        .collect(),
                    affinity,
                ));
            }
        }
        services.extend(traffic(c));
        match c {
            0 => {
                services.push(export("data", "db", vec![endpoint("100.9.0.1", true)]));
                services.push(export("shop", "api", vec![endpoint("100.9.0.2", false)]));
                services.push(export("shop", "v6", vec![endpoint("fd00::99", true)]));
            }
            3 => {
                let drain = || vec![serving_unready("100.3.2.1"), serving_unready("fd00::3:2:1")];
                services.push(export("shop", "drain", drain()));
                services.push(export("shop", "mixed", drain()));
            }
            5 => {
                services.push(export("shop", "mixed", vec![endpoint("100.5.2.1", true)]));
                // More than a 1232-byte reply holds under a large --max-answers.
                services.push(export(
                    "shop",
                    "big",
                    (0..200u16)
                        .map(|e| endpoint(&format!("100.5.{}.{}", 10 + e / 100, e % 100), true))
                        .collect(),
                ));
            }
            6 | 7 => services.push(export(
                "shop",
                "gone",
                vec![
                    endpoint(&format!("100.{c}.3.1"), true),
                    endpoint(&format!("fd00::{c}:3:1"), true),
                ],
            )),
            _ => {}
        }
        services
    };
    // The stale clusters first: a sweep from a minute ahead finds them
    // silent past their TTL; the live ones say hello after it.
    for c in [6u8, 7] {
        let session = hello(c);
        registry
            .apply_snapshot(&session, services(c), &Default::default())
            .unwrap();
    }
    registry.sweep(
        Instant::now() + Duration::from_secs(60),
        Liveness {
            cluster_ttl: Duration::from_secs(30),
            stale_grace: Duration::from_secs(3600),
        },
    );
    for c in 0..6u8 {
        let session = hello(c);
        registry
            .apply_snapshot(&session, services(c), &Default::default())
            .unwrap();
    }
    registry.set_policy(Arc::new(fleet_policy()));
    let snapshot = registry.snapshot().clone();
    assert!(snapshot.service("gone", "shop").unwrap().fail_open);
    assert!(snapshot.service("wt", "tp").unwrap().weighted);
    snapshot
}

/// The policy file of the fleet: drains, a provider override, a region
/// default failover order, a service's own threshold.
fn fleet_policy() -> FleetPolicy {
    let mut policy = FleetPolicy::default();
    let cluster = |c: &str| ClusterName::new(c).unwrap();
    policy.clusters.insert(
        cluster("c2"),
        ClusterPolicy {
            drain_percent: 50,
            ..ClusterPolicy::default()
        },
    );
    policy.clusters.insert(
        cluster("c5"),
        ClusterPolicy {
            drain_percent: 100,
            ..ClusterPolicy::default()
        },
    );
    policy.clusters.insert(
        cluster("c3"),
        ClusterPolicy {
            provider: Some(LabelValue::new("aws").unwrap()),
            weight_percent: 300,
            ..ClusterPolicy::default()
        },
    );
    policy.regions.insert(
        LabelValue::new("east").unwrap(),
        RegionPolicy {
            failover: vec![region("west")].into(),
        },
    );
    let mut web = ServicePolicy::default();
    web.weight_percent.insert(cluster("c4"), 250);
    policy.services.insert(
        ServiceKey {
            namespace: Namespace::new("tp").unwrap(),
            name: ServiceName::new("wt").unwrap(),
        },
        web,
    );
    policy
}

/// Cluster `c`'s exports of the traffic-policy services.
fn traffic(c: u8) -> Vec<ServiceExport> {
    let mut out = Vec::new();
    let ep = |e: u8, w: u32| weighted(&format!("100.{c}.5.{e}"), w, c);
    let v6 = |e: u8, w: u32| weighted(&format!("fd00::{c}:5:{e}"), w, c);
    if matches!(c, 1 | 2 | 4 | 5) {
        out.push(export(
            "tp",
            "wt",
            [0, 5, 10, 20, 40, 10, 10]
                .iter()
                .enumerate()
                .map(|(e, w)| ep(e as u8, *w))
                .chain([v6(1, 30), v6(2, 10)])
                .collect(),
        ));
    }
    if matches!(c, 1 | 4 | 5) {
        out.push(export_policy(
            "tp",
            "fo",
            vec![ep(10, 10), ep(11, 10)],
            Policy {
                failover: vec![region("west")].into(),
                min_healthy: Some(MinHealthy::Count(3)),
                ..Policy::default()
            },
        ));
        out.push(export_policy(
            "tp",
            "pri",
            vec![ep(20, 10), ep(21, 20), v6(20, 10)],
            Policy {
                primary: Some(region("west")),
                min_healthy: Some(MinHealthy::Count(2)),
                ..Policy::default()
            },
        ));
    }
    if matches!(c, 0 | 1 | 2 | 4) {
        let mut eps = vec![ep(30, 10), ep(31, 10), ep(32, 10), ep(33, 10)];
        for e in eps.iter_mut().skip(usize::from(c % 3)) {
            e.ready = false;
            e.serving = false;
        }
        out.push(export_policy(
            "tp",
            "mh",
            eps,
            Policy {
                min_healthy: Some(MinHealthy::Percent(50)),
                ..Policy::default()
            },
        ));
        out.push(export_policy(
            "tp",
            "ex",
            vec![
                Endpoint {
                    hostname: Some(Hostname::new("h40").unwrap()),
                    ..ep(40, 10)
                },
                v6(40, 10),
            ],
            Policy {
                export_to: vec![
                    Scope::Cluster(ClusterName::new("c1").unwrap()),
                    region("west"),
                ]
                .into(),
                ..Policy::default()
            },
        ));
        out.push(export_policy(
            "tp",
            "node",
            vec![ep(50, 10), ep(51, 20), v6(50, 10)],
            Policy {
                affinity: Affinity::Node,
                ..Policy::default()
            },
        ));
        out.push(export_policy(
            "tp",
            "prov",
            vec![ep(60, 10), ep(61, 10)],
            Policy {
                affinity: Affinity::Provider,
                min_healthy: Some(MinHealthy::Count(3)),
                ..Policy::default()
            },
        ));
    }
    if matches!(c, 2 | 3) {
        out.push(export("tp", "last", vec![ep(70, 0), ep(71, 0), v6(70, 0)]));
    }
    out
}

/// The served domains and settings both paths are compared under: the
/// default settings; a long negative TTL, few answers, `min_healthy`
/// 4 (tiers spill over) and ECS trusted from c5's askers and `::1`; and the MCS domain first, a third domain and
/// the reverse zones, `min_healthy` 2, up to 100 answers (more than a
/// UDP reply holds) and an NSID.
fn authorities() -> Vec<Authority> {
    let domains = vec![
        Domain::parse("global").unwrap(),
        Domain::parse("clusterset.local").unwrap(),
    ];
    let mut more = vec![
        Domain::parse("clusterset.local").unwrap(),
        Domain::parse("mesh.example.org").unwrap(),
    ];
    more.extend(Domain::reverse());
    // One cookie secret and a stopped clock: both paths make the same
    // server cookie.
    let cookies = Cookies::new([3; 16]).at_time(NOW);
    vec![
        Authority::new(domains.clone(), 5, 5, 8, 1)
            .unwrap()
            .with_cookies(cookies.clone()),
        Authority::new(domains, 30, 10, 3, 4)
            .unwrap()
            .with_cookies(cookies.clone())
            .with_ecs_trusted(vec![
                "10.5.0.0/16".parse().unwrap(),
                "::1/128".parse().unwrap(),
            ]),
        Authority::new(more, 60, 3600, 100, 2)
            .unwrap()
            .with_cookies(cookies.clone())
            .with_nsid(b"replica-1".to_vec()),
    ]
}

/// The cookie clock of the tests (unix seconds).
const NOW: u32 = 1_800_000_000;

/// A COOKIE option in a query.
#[derive(Debug, Clone)]
enum CookieAsk {
    /// A client cookie alone.
    Client([u8; 8]),
    /// A client cookie and a server cookie this server made `age`
    /// seconds ago for `source` (valid, or refreshed, or expired).
    Ours { client: [u8; 8], age: u32 },
    /// A client cookie and some other bytes as the server cookie.
    Other(Vec<u8>),
}

fn cookie_data(cookie: &CookieAsk, source: IpAddr) -> Vec<u8> {
    match cookie {
        CookieAsk::Client(c) => c.to_vec(),
        CookieAsk::Ours { client, age } => Cookies::new([3; 16])
            .at_time(NOW - age)
            .answer(client, source)
            .unwrap()
            .data
            .to_vec(),
        CookieAsk::Other(bytes) => bytes.clone(),
    }
}

fn cookie() -> impl Strategy<Value = CookieAsk> {
    prop_oneof![
        any::<[u8; 8]>().prop_map(CookieAsk::Client),
        (
            any::<[u8; 8]>(),
            prop_oneof![Just(0u32), Just(1000), Just(2000), Just(4000)]
        )
            .prop_map(|(client, age)| CookieAsk::Ours { client, age }),
        // Malformed lengths and other servers' cookies alike.
        proptest::collection::vec(any::<u8>(), 0..44).prop_map(CookieAsk::Other),
    ]
}

/// Names asked, with `{d}` standing for a served domain (the names are
/// asked under every domain of [`DOMAINS`]).
const NAMES: &[&str] = &[
    "web.shop.{d}",
    "db.data.{d}",
    "api.shop.{d}",
    "v6.shop.{d}",
    "nope.shop.{d}",
    "nope.nons.{d}",
    "near.pol.{d}",
    "clus.pol.{d}",
    "zone.pol.{d}",
    "region.pol.{d}",
    "every.pol.{d}",
    "gone.shop.{d}",
    "drain.shop.{d}",
    "mixed.shop.{d}",
    "big.shop.{d}",
    "{d}",
    "shop.{d}",
    "c1.web.shop.{d}",
    "_http._tcp.web.shop.{d}",
    "web.shop.{d}.{d}",
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
    "wt.tp.{d}",
    "fo.tp.{d}",
    "pri.tp.{d}",
    "mh.tp.{d}",
    "ex.tp.{d}",
    "node.tp.{d}",
    "prov.tp.{d}",
    "last.tp.{d}",
    "_http._tcp.wt.tp.{d}",
    "c1.ex.tp.{d}",
    "c1.wt.tp.{d}",
    "h40.c1.ex.tp.{d}",
    "h40.c9.ex.tp.{d}",
    "c9.ex.tp.{d}",
    "_http._tcp.ex.tp.{d}",
    "_tcp.ex.tp.{d}",
    "40.5.1.100.in-addr.arpa",
    "40.5.4.100.in-addr.arpa",
];

/// Where the traffic-policy names start in [`NAMES`], and how many of
/// them are service names (the fast path's).
const TRAFFIC: usize = 34;
const TRAFFIC_SERVICES: usize = 8;

/// What `{d}` in a name stands for: each authority's forward domains
/// (in the MCS layout, service names sit under `svc.`), and one served
/// by none.
const DOMAINS: &[&str] = &[
    "global",
    "svc.clusterset.local",
    "clusterset.local",
    "mesh.example.org",
    "example.net",
];

/// An OPT record: (payload size, DO bit, Client Subnet as (address,
/// prefix), a COOKIE option).
type Opt = (u16, bool, Option<(IpAddr, u8)>, Option<CookieAsk>);

#[derive(Debug, Clone)]
struct Ask {
    name: Asked,
    case: Vec<bool>,
    qtype: u16,
    edns: Option<Opt>,
    source: IpAddr,
    rd: bool,
    cd: bool,
    rotation: usize,
    /// The OPT (if any) asks for the NSID.
    nsid: bool,
}

impl Ask {
    /// The first listed name's A record from c1, without EDNS.
    fn plain() -> Self {
        Ask {
            name: Asked::Listed(0, 0),
            case: vec![false],
            qtype: 1,
            edns: None,
            source: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 9)),
            rd: true,
            cd: false,
            rotation: 0,
            nsid: false,
        }
    }
}

/// A name asked: one of [`NAMES`] under one of [`DOMAINS`], or random
/// labels (printable ASCII and dots' neighbours) before a domain.
#[derive(Debug, Clone)]
enum Asked {
    Listed(usize, usize),
    Random(Vec<String>, usize),
}

impl Asked {
    fn text(&self) -> String {
        match self {
            Asked::Listed(name, domain) => NAMES[*name].replace("{d}", DOMAINS[*domain]),
            Asked::Random(labels, domain) => {
                let mut labels = labels.clone();
                labels.push(DOMAINS[*domain].to_owned());
                labels.join(".")
            }
        }
    }
}

fn asked() -> impl Strategy<Value = Asked> {
    prop_oneof![
        3 => (0..NAMES.len(), 0..DOMAINS.len()).prop_map(|(n, d)| Asked::Listed(n, d)),
        1 => (
            proptest::collection::vec("[a-z0-9_*-]{1,12}|web|shop|c[0-9]|pol|svc", 0..5),
            0..DOMAINS.len()
        )
            .prop_map(|(labels, d)| Asked::Random(labels, d)),
    ]
}

/// A source prefix up to `width`, the edges (0: no tailoring; the whole
/// address) as often as the rest.
fn prefix(width: u8) -> impl Strategy<Value = u8> {
    prop_oneof![Just(0u8), Just(width), 0..=width]
}

/// `address` with the bits beyond `prefix` cleared, and the prefix.
fn masked(address: IpAddr, prefix: u8) -> (IpAddr, u8) {
    let address = match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    };
    (address, prefix)
}

fn ask() -> impl Strategy<Value = Ask> {
    let qtype = prop_oneof![
        4 => prop_oneof![Just(1u16), Just(28)],
        1 => prop_oneof![Just(16u16), Just(33), Just(255), Just(6), Just(2), Just(12)],
        1 => any::<u16>(),
    ];
    // ECS from inside each cluster (both families), from nowhere known,
    // and with every source prefix.
    let subnet = prop_oneof![
        (0u8..8, prefix(32)).prop_map(|(c, p)| masked(IpAddr::V4(Ipv4Addr::new(10, c, 1, 1)), p)),
        (0u8..8, prefix(128))
            .prop_map(|(c, p)| masked(IpAddr::V6(format!("fd10:{c}::1").parse().unwrap()), p)),
        prefix(32).prop_map(|p| masked(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), p)),
        prefix(128).prop_map(|p| masked(IpAddr::V6("2001:db8::1".parse().unwrap()), p)),
        // Address bits beyond the prefix: FORMERR (the full handler's).
        (0u8..32).prop_map(|p| (IpAddr::V4(Ipv4Addr::new(10, 1, 255, 255)), p)),
    ];
    let edns = proptest::option::of((
        prop_oneof![Just(512u16), Just(1232), Just(4096), Just(100)],
        any::<bool>(),
        proptest::option::of(subnet),
        proptest::option::of(cookie()),
    ));
    let source = prop_oneof![
        (0u8..8).prop_map(|c| IpAddr::V4(Ipv4Addr::new(10, c, 0, 9))),
        (0u8..8).prop_map(|c| IpAddr::V6(format!("fd10:{c}::9").parse().unwrap())),
        Just(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Just("::1".parse::<IpAddr>().unwrap()),
    ];
    (
        asked(),
        proptest::collection::vec(any::<bool>(), 40),
        qtype,
        edns,
        source,
        any::<bool>(),
        any::<bool>(),
        any::<usize>(),
        any::<bool>(),
    )
        .prop_map(
            |(name, case, qtype, edns, source, rd, cd, rotation, nsid)| Ask {
                name,
                case,
                qtype,
                edns,
                source,
                rd,
                cd,
                rotation,
                nsid,
            },
        )
}

fn packet(ask: &Ask) -> Vec<u8> {
    let text: String = ask
        .name
        .text()
        .chars()
        .zip(ask.case.iter().cycle())
        .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
        .collect();
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = ask.rd;
    m.metadata.checking_disabled = ask.cd;
    let mut q = Query::query(
        Name::from_ascii(format!("{text}.")).unwrap_or_else(|_| Name::root()),
        RecordType::from(ask.qtype),
    );
    q.set_query_class(DNSClass::IN);
    m.queries.push(q);
    if let Some((payload, dnssec_ok, subnet, cookie)) = &ask.edns {
        let (payload, dnssec_ok, subnet) = (*payload, *dnssec_ok, *subnet);
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
        if ask.nsid {
            edns.options_mut()
                .insert(EdnsOption::Unknown(3, Vec::new()));
        }
        if let Some(cookie) = cookie {
            edns.options_mut()
                .insert(EdnsOption::Unknown(10, cookie_data(cookie, ask.source)));
        }
        m.edns = Some(edns);
    }
    m.to_vec().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn fast_path_replies_as_the_full_handler(ask in ask(), tcp in any::<bool>()) {
        let snapshot = snapshot();
        // Over TCP only the size limit differs: what UDP leaves to the
        // full handler for its size, the fast path takes.
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        for zone in authorities() {
            let bytes = packet(&ask);
            let mut out = Vec::new();
            select::set_rotation(ask.rotation);
            let fast = fast::answer_over(transport, &snapshot, &zone, &bytes, ask.source, &mut out);
            select::set_rotation(ask.rotation);
            let (full, full_outcome) =
                authority::respond(&snapshot, &zone, &bytes, ask.source, transport).unwrap();
            if let Some(outcome) = fast {
                prop_assert_eq!(&out, &full, "{:?}", ask);
                prop_assert_eq!(outcome.rcode, full_outcome.rcode);
                prop_assert_eq!(outcome.qtype, full_outcome.qtype);
                prop_assert_eq!(outcome.ecs, full_outcome.ecs);
                prop_assert_eq!(outcome.fail_open, full_outcome.fail_open);
                prop_assert_eq!(outcome.cookie, full_outcome.cookie);
                // The answer metrics count the same on both paths.
                prop_assert_eq!(outcome.tier, full_outcome.tier);
                prop_assert_eq!(outcome.served, full_outcome.served);
            }
            same_for_every_asker_when_scoped_zero(&snapshot, &zone, &ask, &full)?;
        }
    }

    #[test]
    fn fast_path_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let snapshot = snapshot();
        let mut out = Vec::new();
        for zone in authorities() {
            let _ = fast::answer(&snapshot, &zone, &bytes, IpAddr::V4(Ipv4Addr::LOCALHOST), &mut out);
        }
    }
}

/// The shapes that matter most are taken by the fast path at all.
#[test]
fn fast_path_takes_the_common_queries() {
    let snapshot = snapshot();
    let zone = &authorities()[0];
    let base = Ask::plain();
    for ask in [
        base.clone(),
        Ask {
            qtype: 28,
            ..base.clone()
        },
        Ask {
            name: Asked::Listed(4, 0),
            ..base.clone()
        },
        Ask {
            name: Asked::Listed(0, 1),
            ..base.clone()
        },
        Ask {
            name: Asked::Listed(2, 0),
            ..base.clone()
        },
        Ask {
            edns: Some((
                1232,
                true,
                Some((IpAddr::V4(Ipv4Addr::new(10, 2, 0, 0)), 24)),
                None,
            )),
            ..base.clone()
        },
        Ask {
            edns: Some((1232, false, None, Some(CookieAsk::Client([7; 8])))),
            ..base.clone()
        },
        Ask {
            edns: Some((
                1232,
                false,
                Some((IpAddr::V4(Ipv4Addr::new(10, 2, 0, 0)), 24)),
                Some(CookieAsk::Ours {
                    client: [7; 8],
                    age: 10,
                }),
            )),
            ..base.clone()
        },
    ]
    .into_iter()
    // Every affinity, fail open, serving-but-unready, the third domain,
    // an IPv6 asker and an IPv6 ECS subnet.
    .chain((6..14).map(|name| Ask {
        name: Asked::Listed(name, 0),
        ..base.clone()
    }))
    // Every traffic-policy service, from a node of c1 and over ECS.
    .chain((TRAFFIC..TRAFFIC + TRAFFIC_SERVICES).flat_map(|name| {
        [
            Ask {
                name: Asked::Listed(name, 0),
                ..base.clone()
            },
            Ask {
                name: Asked::Listed(name, 0),
                edns: Some((1232, false, Some(("10.5.0.0".parse().unwrap(), 24)), None)),
                ..base.clone()
            },
        ]
    }))
    .chain([
        Ask {
            name: Asked::Listed(0, 3),
            ..base.clone()
        },
        Ask {
            source: "fd10:2::9".parse().unwrap(),
            ..base.clone()
        },
        Ask {
            edns: Some((1232, false, None, None)),
            nsid: true,
            ..base.clone()
        },
        Ask {
            edns: Some((1232, false, Some(("fd10:4::".parse().unwrap(), 48)), None)),
            ..base.clone()
        },
    ]) {
        for zone in [zone, &authorities()[2]] {
            let mut out = Vec::new();
            let taken = fast::answer(&snapshot, zone, &packet(&ask), ask.source, &mut out);
            let Asked::Listed(_, d) = ask.name else {
                unreachable!()
            };
            let served = zone
                .domains()
                .iter()
                .any(|domain| DOMAINS[d].ends_with(domain.fqdn().trim_end_matches('.')));
            assert_eq!(taken.is_some(), served, "{ask:?}");
        }
    }
}

/// Over TCP the fast path takes the answers UDP leaves to the full
/// handler for their size (truncated over UDP: more than 512 bytes
/// without EDNS), and writes them as the full handler does over TCP.
#[test]
fn fast_path_over_tcp_takes_what_udp_cannot_fit() {
    let snapshot = snapshot();
    let mut taken = 0;
    for zone in &authorities() {
        for d in 0..DOMAINS.len() {
            for (name, qtype) in (0..NAMES.len()).flat_map(|n| [(n, 1), (n, 28)]) {
                let ask = Ask {
                    name: Asked::Listed(name, d),
                    qtype,
                    source: "192.0.2.1".parse().unwrap(),
                    ..Ask::plain()
                };
                let bytes = packet(&ask);
                let Some((udp, _)) =
                    authority::respond(&snapshot, zone, &bytes, ask.source, Transport::Udp)
                else {
                    continue;
                };
                if !Message::from_vec(&udp).unwrap().metadata.truncation {
                    continue;
                }
                let mut out = Vec::new();
                assert!(
                    fast::answer(&snapshot, zone, &bytes, ask.source, &mut out).is_none(),
                    "{ask:?}: the fast path answered what UDP truncates"
                );
                select::set_rotation(7);
                let fast = fast::answer_over(
                    Transport::Tcp,
                    &snapshot,
                    zone,
                    &bytes,
                    ask.source,
                    &mut out,
                );
                select::set_rotation(7);
                let (full, _) =
                    authority::respond(&snapshot, zone, &bytes, ask.source, Transport::Tcp)
                        .unwrap();
                assert!(fast.is_some(), "{ask:?}: left to the full handler over TCP");
                assert_eq!(out, full, "{ask:?}");
                taken += 1;
            }
        }
    }
    assert!(taken > 0, "no answer here is too large for UDP");
}

/// Cookies: the fast path answers a client cookie and a valid server
/// cookie (marking the latter verified, as the full handler does), and
/// leaves a malformed option to the full handler, which answers FORMERR
/// with an OPT and the question.
#[test]
fn cookies_in_both_paths() {
    let snapshot = snapshot();
    let zone = &authorities()[0];
    let source = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 9));
    let ask = |cookie: CookieAsk| Ask {
        name: Asked::Listed(0, 0),
        case: vec![false],
        qtype: 1,
        edns: Some((1232, false, None, Some(cookie))),
        source,
        rd: true,
        cd: false,
        rotation: 0,
        nsid: false,
    };
    let run = |ask: &Ask| {
        let mut out = Vec::new();
        let fast = fast::answer(&snapshot, zone, &packet(ask), source, &mut out);
        let full =
            authority::respond(&snapshot, zone, &packet(ask), source, Transport::Udp).unwrap();
        (fast, out, full)
    };
    let cookie_of = |reply: &[u8]| {
        let m = Message::from_vec(reply).unwrap();
        match m
            .edns
            .unwrap()
            .option(hickory_proto::rr::rdata::opt::EdnsCode::Cookie)
        {
            Some(EdnsOption::Unknown(10, data)) => data.clone(),
            other => panic!("no cookie in the reply: {other:?}"),
        }
    };
    // A client cookie: a server cookie back, not verified.
    let (fast, out, (_, full)) = run(&ask(CookieAsk::Client([5; 8])));
    let fast = fast.expect("the fast path takes a client cookie");
    assert!(!fast.cookie && !full.cookie);
    let server = cookie_of(&out);
    assert_eq!(server.len(), 24);
    assert_eq!(&server[..8], &[5; 8]);
    // Presented again: verified on both paths, and echoed.
    let (fast, out, (_, full)) = run(&ask(CookieAsk::Other(server.clone())));
    assert!(fast.expect("taken").cookie);
    assert!(full.cookie);
    assert_eq!(cookie_of(&out), server);
    // An expired one: not verified, a fresh one back.
    let (fast, _, (_, full)) = run(&ask(CookieAsk::Ours {
        client: [5; 8],
        age: 4000,
    }));
    assert!(!fast.expect("taken").cookie && !full.cookie);
    // Malformed: the full handler's FORMERR, with our OPT and the question.
    for len in [0usize, 7, 9, 15, 41] {
        let (fast, _, (reply, full)) = run(&ask(CookieAsk::Other(vec![1; len])));
        assert!(fast.is_none(), "{len}");
        assert_eq!(full.rcode, 1, "{len}");
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.queries.len(), 1, "{len}");
        assert!(m.edns.is_some(), "{len}");
    }
}

/// Both paths say which tier an answer came from and which clusters
/// served it, in the terms `/metrics` counts: an asker in c1 gets c1's
/// own endpoints (tier cluster); an asker in no cluster gets endpoints
/// from all over (unknown_asker), and the clusters named are those of
/// the addresses answered (`100.<c>.0.<e>` is cluster c's); a name that
/// does not exist counts neither.
#[test]
fn answers_name_their_tier_and_serving_clusters() {
    let snapshot = snapshot();
    let zone = &authorities()[0];
    let names = |served: &meshdns::metrics::Served| -> Vec<String> {
        let mut names: Vec<String> = served
            .ids()
            .iter()
            .map(|id| snapshot.locality.place(*id).unwrap().name.to_string())
            .collect();
        names.sort();
        names
    };
    let answered_from = |reply: &[u8]| -> Vec<String> {
        let mut clusters: Vec<String> = Message::from_vec(reply)
            .unwrap()
            .answers
            .iter()
            .map(|r| {
                let ip = r.data.to_string();
                format!("c{}", ip.split('.').nth(1).unwrap())
            })
            .collect();
        clusters.sort();
        clusters.dedup();
        clusters
    };
    let base = Ask::plain();
    let unknown = Ask {
        source: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        ..base.clone()
    };
    let missing = Ask {
        name: Asked::Listed(4, 0),
        ..base.clone()
    };
    for (ask, tier) in [
        (&base, Some("cluster")),
        (&unknown, Some("unknown_asker")),
        (&missing, None),
    ] {
        let bytes = packet(ask);
        let mut out = Vec::new();
        select::set_rotation(0);
        let fast = fast::answer(&snapshot, zone, &bytes, ask.source, &mut out).expect("taken");
        select::set_rotation(0);
        let (reply, full) =
            authority::respond(&snapshot, zone, &bytes, ask.source, Transport::Udp).unwrap();
        assert_eq!(out, reply);
        let expected = answered_from(&reply);
        match tier {
            Some("cluster") => assert_eq!(expected, ["c1"]),
            Some(_) => assert!(expected.len() > 1, "{expected:?}"),
            None => assert!(expected.is_empty()),
        }
        for outcome in [fast, full] {
            assert_eq!(outcome.tier.map(|t| t.name()), tier, "{ask:?}");
            assert_eq!(names(&outcome.served), expected, "{ask:?}");
        }
    }
}

/// The full handler's reply to `name` (type `qtype`) from `source`, with
/// an ECS option of `subnet` if given.
fn full_reply(
    zone: &Authority,
    name: &str,
    qtype: RecordType,
    source: &str,
    subnet: Option<(&str, u8)>,
) -> Message {
    let (reply, fast) = replies(zone, name, qtype, source, subnet);
    if let Some(fast) = fast {
        assert_eq!(fast, reply, "{name} from {source} ecs {subnet:?}");
    }
    Message::from_vec(&reply).unwrap()
}

/// The full handler's reply, and the fast path's when it takes the query.
fn replies(
    zone: &Authority,
    name: &str,
    qtype: RecordType,
    source: &str,
    subnet: Option<(&str, u8)>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii(name).unwrap(), qtype);
    q.set_query_class(DNSClass::IN);
    m.queries.push(q);
    if let Some((address, prefix)) = subnet {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                address.parse().unwrap(),
                prefix,
                0,
            )));
        m.edns = Some(edns);
    }
    let bytes = m.to_vec().unwrap();
    let source = source.parse().unwrap();
    let mut out = Vec::new();
    select::set_rotation(0);
    let fast = fast::answer(&snapshot(), zone, &bytes, source, &mut out).map(|_| out);
    select::set_rotation(0);
    let (reply, _) = authority::respond(&snapshot(), zone, &bytes, source, Transport::Udp).unwrap();
    (reply, fast)
}

fn scope_of(m: &Message) -> Option<u8> {
    match m
        .edns
        .as_ref()?
        .option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)?
    {
        EdnsOption::Subnet(s) => Some(s.scope_prefix()),
        _ => None,
    }
}

/// Every name under a service restricted by `export-to` (`ex.tp`, for c1
/// and region west), in every form — the service, a cluster, a host, a
/// missing cluster or host, SRV, `_proto`, NODATA — and its addresses'
/// PTR names: the answer depends on who asks, so its ECS scope is never
/// 0, whatever prefix the query sent; a /0 query (no tailoring) is
/// decided by the packet source; outsiders get NXDOMAIN, PTR included.
#[test]
fn restricted_names_depend_on_the_asker() {
    let zone = &authorities()[2];
    let names = [
        ("ex.tp.mesh.example.org", RecordType::A),
        ("ex.tp.mesh.example.org", RecordType::TXT),
        ("c1.ex.tp.mesh.example.org", RecordType::A),
        ("c1.ex.tp.mesh.example.org", RecordType::AAAA),
        ("h40.c1.ex.tp.mesh.example.org", RecordType::A),
        ("h40.c1.ex.tp.mesh.example.org", RecordType::AAAA),
        ("c9.ex.tp.mesh.example.org", RecordType::A),
        ("h9.c1.ex.tp.mesh.example.org", RecordType::A),
        ("_http._tcp.ex.tp.mesh.example.org", RecordType::SRV),
        ("_tcp.ex.tp.mesh.example.org", RecordType::SRV),
        ("40.5.1.100.in-addr.arpa", RecordType::PTR),
    ];
    // (subnet, source, inside): ECS of an insider's (c1) or an
    // outsider's (c0) subnet at several prefixes, or /0 (the source decides).
    let asks = [
        (Some(("10.1.0.0", 16)), "10.1.0.9", true),
        (Some(("10.1.1.0", 24)), "10.1.0.9", true),
        (Some(("10.1.1.1", 32)), "10.1.0.9", true),
        (Some(("10.0.0.0", 16)), "10.0.0.9", false),
        (Some(("0.0.0.0", 0)), "10.1.0.9", true),
        (Some(("0.0.0.0", 0)), "10.0.0.9", false),
        (Some(("::", 0)), "10.4.0.9", true),
        (Some(("::", 0)), "192.0.2.1", false),
        (None, "10.1.0.9", true),
        (None, "10.0.0.9", false),
    ];
    for (name, qtype) in names {
        for (subnet, source, inside) in asks {
            let reply = full_reply(zone, &format!("{name}."), qtype, source, subnet);
            let what = format!("{name} {qtype} ecs {subnet:?} from {source}");
            if let Some((address, prefix)) = subnet {
                let width = if address.contains(':') { 128 } else { 32 };
                let expected = if prefix == 0 { width } else { prefix };
                assert_eq!(scope_of(&reply), Some(expected), "{what}");
            }
            let rcode = reply.metadata.response_code;
            if !inside {
                assert_eq!(rcode, ResponseCode::NXDomain, "{what}");
                assert!(reply.answers.is_empty(), "{what}");
            } else if !name.starts_with("c9.") && !name.starts_with("h9.") {
                assert_eq!(rcode, ResponseCode::NoError, "{what}");
            }
        }
    }
    // An insider sees the PTR name; an unrestricted service's stays
    // visible to all (c4's `wt` endpoint, no ECS scope asked).
    let reply = full_reply(
        zone,
        "40.5.1.100.in-addr.arpa.",
        RecordType::PTR,
        "10.1.0.9",
        None,
    );
    assert_eq!(reply.answers.len(), 1, "{reply:?}");
    let reply = full_reply(
        zone,
        "1.5.4.100.in-addr.arpa.",
        RecordType::PTR,
        "10.0.0.9",
        None,
    );
    assert_eq!(reply.answers.len(), 1, "{reply:?}");
}

/// A forged ECS option cannot widen `export-to` (`ex.tp`: c1 and region
/// west): from a source outside it, or of no cluster, an insider's
/// subnet still gets NXDOMAIN, and from an insider an outsider's subnet
/// does too; from a trusted resolver (`--ecs-trusted-from`: c5's
/// askers, `::1`) the subnet alone decides. Both paths alike.
#[test]
fn spoofed_ecs_cannot_widen_export_to() {
    let plain = &authorities()[0];
    let trusting = &authorities()[1];
    for name in [
        "ex.tp.global.",
        "c1.ex.tp.global.",
        "_http._tcp.ex.tp.global.",
    ] {
        let qtype = if name.starts_with('_') {
            RecordType::SRV
        } else {
            RecordType::A
        };
        for (zone, source, subnet, status) in [
            // An outsider (c0) or a stranger forging an insider's (c1) subnet.
            (plain, "10.0.0.9", ("10.1.0.0", 16), ResponseCode::NXDomain),
            (plain, "192.0.2.1", ("10.1.0.0", 16), ResponseCode::NXDomain),
            (plain, "10.5.0.9", ("10.1.0.0", 16), ResponseCode::NoError),
            // An insider asking for an outsider's subnet: both must be inside.
            (plain, "10.1.0.9", ("10.0.0.0", 16), ResponseCode::NXDomain),
            (plain, "10.1.0.9", ("10.4.0.0", 16), ResponseCode::NoError),
            // A trusted resolver: the subnet decides, whatever its own place.
            (
                trusting,
                "10.5.0.9",
                ("10.0.0.0", 16),
                ResponseCode::NXDomain,
            ),
            (
                trusting,
                "10.5.0.9",
                ("10.1.0.0", 16),
                ResponseCode::NoError,
            ),
            (trusting, "::1", ("10.1.0.0", 16), ResponseCode::NoError),
            (
                trusting,
                "10.0.0.9",
                ("10.1.0.0", 16),
                ResponseCode::NXDomain,
            ),
        ] {
            let reply = full_reply(zone, name, qtype, source, Some(subnet));
            assert_eq!(
                reply.metadata.response_code, status,
                "{name} from {source} ecs {subnet:?}"
            );
        }
    }
}

/// SRV weights are applied once: `wt.tp` in c1 has eight targets of
/// positive weight (5 to 40). With `--max-answers` 8 the answer is the
/// whole tier, each record with its weight for the client to weigh by;
/// with 3 the targets were sampled by weight, and every record says 1.
/// Priority 0 either way: one tier.
#[test]
fn srv_weights_are_applied_once() {
    let srv = |zone: &Authority| -> Vec<(u16, u16)> {
        let reply = full_reply(
            zone,
            "_http._tcp.wt.tp.global.",
            RecordType::SRV,
            "10.1.0.9",
            None,
        );
        let mut got: Vec<(u16, u16)> = reply
            .answers
            .iter()
            .map(|r| match &r.data {
                hickory_proto::rr::RData::SRV(s) => (s.priority, s.weight),
                other => panic!("{other:?}"),
            })
            .collect();
        got.sort();
        got
    };
    assert_eq!(
        srv(&authorities()[0]),
        [5, 10, 10, 10, 10, 20, 30, 40].map(|w| (0, w))
    );
    assert_eq!(srv(&authorities()[1]), [(0, 1); 3]);
}

/// The askers a scope-0 reply is checked against: a /32 (/128) client
/// subnet inside each cluster, and one of no cluster, in both families.
fn every_asker() -> impl Iterator<Item = (IpAddr, u8)> {
    (0u8..8)
        .flat_map(|c| {
            [
                (IpAddr::V4(Ipv4Addr::new(10, c, 1, 1)), 32),
                (IpAddr::V6(format!("fd10:{c}::1").parse().unwrap()), 128),
            ]
        })
        .chain([
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 32),
            (IpAddr::V6("2001:db8::1".parse().unwrap()), 128),
        ])
}

/// An ECS scope of 0 tells a resolver the reply fits every client
/// (RFC 7871 §7.3.1): when `full` (the full handler's reply to `ask`)
/// says so, every asker of [`every_asker`] gets the same rcode and
/// records (same rotation; a truncated reply is not compared).
fn same_for_every_asker_when_scoped_zero(
    snapshot: &Snapshot,
    zone: &Authority,
    ask: &Ask,
    full: &[u8],
) -> Result<(), TestCaseError> {
    let Ok(reply) = Message::from_vec(full) else {
        return Ok(());
    };
    if scope_of(&reply) != Some(0) || reply.metadata.truncation {
        return Ok(());
    }
    let records = |m: &Message| {
        (
            m.metadata.response_code,
            m.answers.clone(),
            m.authorities.clone(),
            m.additionals.clone(),
        )
    };
    for subnet in every_asker() {
        let mut other = ask.clone();
        if let Some(edns) = other.edns.as_mut() {
            edns.2 = Some(subnet);
        }
        select::set_rotation(ask.rotation);
        let (bytes, _) =
            authority::respond(snapshot, zone, &packet(&other), ask.source, Transport::Udp)
                .unwrap();
        let theirs = Message::from_vec(&bytes).unwrap();
        if theirs.metadata.truncation {
            continue;
        }
        prop_assert_eq!(
            records(&reply),
            records(&theirs),
            "scope 0 for {:?} but {:?} is answered otherwise",
            ask,
            subnet
        );
    }
    Ok(())
}
