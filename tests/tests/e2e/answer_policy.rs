//! The traffic policy's answers over real DNS queries: a member exports
//! weights and `export-to` over its Export stream; askers on distinct
//! loopback addresses (each a cluster's client CIDR, or none) query with
//! a real client and with dig. Weighted shares hold over a few thousand
//! answers; outsiders and unknown askers get NXDOMAIN, with the ECS scope
//! of their subnet.

use std::collections::BTreeMap;
use std::process::Command;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meshdns_proto::fixtures;
use meshdns_proto::wire::{self, export_request::Message as Req};
use meshdns_tests::dns::{Ask, addresses, ecs_echo, query, rcode};
use meshdns_tests::export_stream::ExportStream;
use meshdns_tests::fleet::TempDir;
use meshdns_tests::unbound::Unbound;
use meshdns_tests::{TestServer, http_get};

/// A member cluster announcing one loopback asker address.
async fn member(server: &TestServer, cluster: &str, asker: &str) -> ExportStream {
    ExportStream::open(
        server.grpc_url(),
        Req::Hello(wire::Hello {
            cluster: cluster.into(),
            region: format!("{cluster}-region"),
            zone: format!("{cluster}-zone"),
            client_cidrs: vec![format!("{asker}/32")],
            version: "test".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("hello accepted")
}

/// `shop/web` with one endpoint per (address, weight), under `policy`.
fn web(endpoints: &[(&str, u32)], policy: wire::Policy) -> wire::ServiceExport {
    wire::ServiceExport {
        policy: Some(policy),
        ..fixtures::wire_service(
            "shop",
            "web",
            endpoints.iter().map(|(ip, weight)| wire::Endpoint {
                serving: true,
                weight: Some(*weight),
                ..fixtures::wire_endpoint(*ip)
            }),
        )
    }
}

async fn export(stream: &mut ExportStream, services: Vec<wire::ServiceExport>) {
    let response = stream
        .send(Req::Snapshot(wire::Snapshot {
            services,
            more: false,
        }))
        .await
        .expect("snapshot answered");
    assert!(response.refusals.is_empty(), "{:?}", response.refusals);
}

#[tokio::test]
async fn weighted_shares_over_real_queries() {
    let server = TestServer::start(&["--max-answers", "2"]).await;
    let mut east = member(&server, "east-1", "127.0.0.2").await;
    let weights = [
        ("10.1.0.1", 10),
        ("10.1.0.2", 20),
        ("10.1.0.3", 30),
        ("10.1.0.4", 40),
    ];
    export(&mut east, vec![web(&weights, wire::Policy::default())]).await;
    // An unknown asker (127.0.0.1): every endpoint, two per answer.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    const QUERIES: usize = 3000;
    for _ in 0..QUERIES {
        let reply = query(server.dns, &Ask::new("web.shop.global", RecordType::A)).await;
        let got = addresses(&reply);
        assert_eq!(got.len(), 2, "{got:?}");
        for a in got {
            *counts.entry(a).or_default() += 1;
        }
    }
    for (ip, weight) in weights {
        let share = counts[ip] as f64 / (2 * QUERIES) as f64;
        let expected = f64::from(weight) / 100.0;
        assert!(
            (share - expected).abs() <= 0.05 * expected,
            "{ip}: {share:.3} of answers, weight share {expected:.3}: {counts:?}"
        );
    }
    // dig sees the same: the heaviest endpoint in most answers, the
    // lightest in few.
    let mut heaviest = 0;
    let mut lightest = 0;
    for _ in 0..200 {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &server.dns.port().to_string(),
                "+short",
                "web.shop.global",
            ])
            .output()
            .expect("dig runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 2, "{text}");
        heaviest += usize::from(text.lines().any(|l| l == "10.1.0.4"));
        lightest += usize::from(text.lines().any(|l| l == "10.1.0.1"));
    }
    // Shares 0.8 and 0.2 of answers: 160 and 40 of 200.
    assert!((140..=180).contains(&heaviest), "{heaviest} of 200");
    assert!((25..=55).contains(&lightest), "{lightest} of 200");
    server.stop().await;
}

#[tokio::test]
async fn export_to_answers_outsiders_nxdomain() {
    // 127.0.0.1 is the askers' resolver, trusted with ECS.
    let server = TestServer::start(&["--ecs-trusted-from", "127.0.0.1/32"]).await;
    let mut east = member(&server, "east-1", "127.0.0.2").await;
    let _west = member(&server, "west-1", "127.0.0.3").await;
    let _north = member(&server, "north-1", "127.0.0.4").await;
    let only = wire::Policy {
        export_to: vec!["cluster:east-1".into(), "region:north-1-region".into()],
        ..Default::default()
    };
    export(&mut east, vec![web(&[("10.1.0.1", 10)], only)]).await;
    let from = |source: &str| Ask::new("web.shop.global", RecordType::A).from(source);
    // Inside: east-1 by name, north-1 by region.
    for inside in ["127.0.0.2", "127.0.0.4"] {
        let reply = query(server.dns, &from(inside)).await;
        assert_eq!(rcode(&reply), ResponseCode::NoError, "{inside}");
        assert_eq!(addresses(&reply), ["10.1.0.1"], "{inside}");
    }
    // Outside, and of no cluster at all: the name does not exist.
    for outside in ["127.0.0.3", "127.0.0.1"] {
        let reply = query(server.dns, &from(outside)).await;
        assert_eq!(rcode(&reply), ResponseCode::NXDomain, "{outside}");
        assert!(reply.answers.is_empty());
    }
    // A resolver asking for an outsider's subnet: NXDOMAIN scoped to it,
    // so it is never served to an insider from the resolver's cache.
    let reply = query(server.dns, &from("127.0.0.1").ecs("127.0.0.3/32")).await;
    assert_eq!(rcode(&reply), ResponseCode::NXDomain);
    assert_eq!(ecs_echo(&reply).map(|(_, _, scope)| scope), Some(32));
    let reply = query(server.dns, &from("127.0.0.1").ecs("127.0.0.2/32")).await;
    assert_eq!(rcode(&reply), ResponseCode::NoError);
    assert_eq!(ecs_echo(&reply).map(|(_, _, scope)| scope), Some(32));
    // dig from each address: the same.
    for (source, status) in [("127.0.0.2", "NOERROR"), ("127.0.0.3", "NXDOMAIN")] {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &server.dns.port().to_string(),
                "-b",
                source,
                "web.shop.global",
            ])
            .output()
            .expect("dig runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("status: {status}")),
            "{source}: {text}"
        );
    }
    server.stop().await;
}

/// Every name under a service exported to east-1 only — the service, its
/// cluster, a host, SRV — with the record type that answers it.
const RESTRICTED_NAMES: [(&str, RecordType); 4] = [
    ("web.shop.global", RecordType::A),
    ("east-1.web.shop.global", RecordType::A),
    ("h1.east-1.web.shop.global", RecordType::A),
    ("_http._tcp.web.shop.global", RecordType::SRV),
];

/// `shop/web` exported to east-1 only, its endpoint with a hostname.
async fn restricted_web(server: &TestServer) -> [ExportStream; 2] {
    let mut east = member(server, "east-1", "127.0.0.2").await;
    let west = member(server, "west-1", "127.0.0.3").await;
    let only = wire::Policy {
        export_to: vec!["cluster:east-1".into()],
        ..Default::default()
    };
    let mut service = web(&[("10.1.0.1", 10)], only);
    service.endpoints[0].hostname = "h1".into();
    export(&mut east, vec![service]).await;
    [east, west]
}

/// On the wire, every name under a restricted service carries the ECS
/// scope of the asker's prefix, and a /0 query (no tailoring) is decided
/// by the packet source with a scope that is not 0.
#[tokio::test]
async fn restricted_names_are_scoped_to_the_asker() {
    let server = TestServer::start(&[]).await;
    let _members = restricted_web(&server).await;
    for (name, qtype) in RESTRICTED_NAMES {
        for (source, subnet, status, scope) in [
            ("127.0.0.2", "127.0.0.2/32", ResponseCode::NoError, 32),
            ("127.0.0.3", "127.0.0.3/32", ResponseCode::NXDomain, 32),
            ("127.0.0.2", "0.0.0.0/0", ResponseCode::NoError, 32),
            ("127.0.0.3", "0.0.0.0/0", ResponseCode::NXDomain, 32),
        ] {
            let reply = query(server.dns, &Ask::new(name, qtype).from(source).ecs(subnet)).await;
            let what = format!("{name} from {source} ecs {subnet}");
            assert_eq!(rcode(&reply), status, "{what}");
            assert_eq!(
                ecs_echo(&reply).map(|(_, _, scope)| scope),
                Some(scope),
                "{what}"
            );
        }
    }
    server.stop().await;
}

/// A caching resolver with ECS (unbound's subnetcache) between the askers
/// and meshdns: an outsider asking after an insider does not get the
/// insider's cached answer, for any name form, and an outsider's /0
/// NXDOMAIN is not served to an insider either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_to_holds_through_an_ecs_caching_resolver() {
    // unbound sends from 127.0.0.1: trusted with ECS.
    let server = TestServer::start(&["--ecs-trusted-from", "127.0.0.1/32"]).await;
    let _members = restricted_web(&server).await;
    let dir = TempDir::new("unbound-ecs");
    let (_unbound, resolver) = Unbound {
        listen: "127.0.0.1",
        outgoing: None,
        stub: Some(server.dns),
        no_cache: false,
    }
    .start_ecs(dir.path());
    let ask = |name: &str, qtype: RecordType, source: &str| Ask::new(name, qtype).from(source);
    for (name, qtype) in RESTRICTED_NAMES {
        // An outsider opting out of tailoring first: NXDOMAIN, cached
        // for /0 askers only.
        let reply = query(resolver, &ask(name, qtype, "127.0.0.3").ecs("0.0.0.0/0")).await;
        assert_eq!(rcode(&reply), ResponseCode::NXDomain, "{name} /0 outsider");
        // An insider: the answer, not the cached NXDOMAIN.
        let reply = query(resolver, &ask(name, qtype, "127.0.0.2")).await;
        assert_eq!(rcode(&reply), ResponseCode::NoError, "{name} insider");
        assert!(!reply.answers.is_empty(), "{name} insider: {reply:?}");
        // An outsider after it: NXDOMAIN, not the insider's cached answer.
        let reply = query(resolver, &ask(name, qtype, "127.0.0.3")).await;
        assert_eq!(rcode(&reply), ResponseCode::NXDomain, "{name} outsider");
        assert!(reply.answers.is_empty(), "{name} outsider: {reply:?}");
    }
    server.stop().await;
}

/// A forged ECS option does not widen export-to: an outsider (west-1) or
/// a stranger sending an insider's subnet with `dig +subnet` gets
/// NXDOMAIN; the same query from a resolver in `--ecs-trusted-from`
/// gets the answer.
#[tokio::test]
async fn spoofed_ecs_gets_nxdomain_unless_trusted() {
    let server = TestServer::start(&["--ecs-trusted-from", "127.0.0.5/32"]).await;
    let _members = restricted_web(&server).await;
    let port = server.dns.port().to_string();
    for (name, qtype) in RESTRICTED_NAMES {
        for (source, status) in [
            ("127.0.0.3", "NXDOMAIN"),
            ("127.0.0.6", "NXDOMAIN"),
            ("127.0.0.5", "NOERROR"),
        ] {
            let out = Command::new("dig")
                .args([
                    "@127.0.0.1",
                    "-p",
                    &port,
                    "-b",
                    source,
                    "+subnet=127.0.0.2/32",
                    name,
                    &qtype.to_string(),
                ])
                .output()
                .expect("dig runs");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(&format!("status: {status}")),
                "{name} from {source}: {text}"
            );
            // The scope is the subnet's either way (never 0).
            assert!(
                text.contains("CLIENT-SUBNET: 127.0.0.2/32/32"),
                "{name} from {source}: {text}"
            );
        }
        // Without the option, the trusted resolver's own place (none) decides.
        let reply = query(server.dns, &Ask::new(name, qtype).from("127.0.0.5")).await;
        assert_eq!(rcode(&reply), ResponseCode::NXDomain, "{name}");
    }
    server.stop().await;
}

/// `/debug/answer` takes what a query carries — the packet source and
/// the ECS subnet — and explains what that query gets: for each
/// (source, subnet), its rcode and ECS scope are the DNS answer's,
/// `--ecs-trusted-from` included (127.0.0.5 is trusted); a subnet it
/// cannot use is refused naming `subnet`.
#[tokio::test]
async fn debug_answer_explains_what_the_query_gets() {
    let server = TestServer::start(&["--ecs-trusted-from", "127.0.0.5/32"]).await;
    let _members = restricted_web(&server).await;
    let cases = [
        ("127.0.0.2", None),
        ("127.0.0.3", None),
        ("127.0.0.5", None),
        ("127.0.0.2", Some("127.0.0.3/32")),
        ("127.0.0.3", Some("127.0.0.2/32")),
        ("127.0.0.6", Some("127.0.0.2/32")),
        ("127.0.0.5", Some("127.0.0.2/32")),
        ("127.0.0.5", Some("127.0.0.3/32")),
        ("127.0.0.2", Some("0.0.0.0/0")),
        ("127.0.0.3", Some("0.0.0.0/0")),
        ("127.0.0.5", Some("127.0.0.0/24")),
    ];
    for (source, subnet) in cases {
        let mut ask = Ask::new("web.shop.global", RecordType::A).from(source);
        let mut path = format!("/debug/answer?name=web.shop.global&source={source}");
        if let Some(subnet) = subnet {
            ask = ask.ecs(subnet);
            path.push_str(&format!("&subnet={subnet}"));
        }
        let reply = query(server.dns, &ask).await;
        let (status, body) = http_get(server.admin, &path).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        let explained: serde_json::Value = serde_json::from_str(&body).unwrap();
        let what = format!("{path}: {body}");
        let rcode_text = match rcode(&reply) {
            ResponseCode::NoError => "NOERROR",
            ResponseCode::NXDomain => "NXDOMAIN",
            other => panic!("{what}: {other:?}"),
        };
        assert_eq!(explained["rcode"], rcode_text, "{what}");
        assert_eq!(
            explained["exported_to_asker"],
            rcode(&reply) == ResponseCode::NoError,
            "{what}"
        );
        assert_eq!(
            explained["ecs_scope"].as_u64(),
            ecs_echo(&reply).map(|(_, _, scope)| u64::from(scope)),
            "{what}"
        );
        let shown: Vec<String> = explained["answer"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(shown, addresses(&reply), "{what}");
    }
    // Refused, naming the parameter: bits beyond the prefix (a query with
    // them gets FORMERR), not a subnet, a subnet without a source.
    for (path, needle) in [
        ("&source=127.0.0.2&subnet=127.0.0.2/24", "subnet:"),
        ("&source=127.0.0.2&subnet=nope", "subnet:"),
        ("&subnet=127.0.0.0/24", "subnet: needs a source"),
    ] {
        let (status, body) = http_get(
            server.admin,
            &format!("/debug/answer?name=web.shop.global{path}"),
        )
        .await
        .unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(needle), "{path}: {body}");
    }
    server.stop().await;
}
