//! Real resolvers in front of meshdns, as pods reach it: unbound with a
//! stub zone for `global`, dnsmasq with `server=/global/...`, and the glibc
//! stub resolver (`getent hosts`) inside a network namespace whose resolv.conf
//! points at meshdns on port 53.

use std::process::Command;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meshdns_tests::dns::{Ask, addresses, poll, query, sorted};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::unbound::{Unbound, program};
use meshdns_tests::{Fleet, bin, eventually};

const WEB: [&str; 4] = ["10.1.0.11", "10.1.0.12", "10.2.0.11", "10.3.0.11"];

/// Debian installs resolvers in /usr/sbin, which a CI PATH may lack.
/// Checks answers through a resolver listening on `port`.
async fn through(port: u16, what: &str) {
    let resolver = format!("127.0.0.1:{port}").parse().unwrap();
    eventually(
        Duration::from_secs(10),
        &format!("{what} answers web.shop.global"),
        || async move {
            let m = poll(resolver, &Ask::new("web.shop.global", RecordType::A)).await?;
            (addresses(&m) == sorted(&WEB)).then_some(())
        },
    )
    .await;
    // NXDOMAIN passes through with the SOA.
    let m = query(resolver, &Ask::new("nope.shop.global", RecordType::A)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{what}");
    assert!(
        m.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA),
        "{what}: SOA in authority: {m:?}"
    );
    // NODATA too.
    let m = query(resolver, &Ask::new("web.shop.global", RecordType::TXT)).await;
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0),
        "{what}"
    );
    // SRV with its targets.
    let m = query(
        resolver,
        &Ask::new("_http._tcp.web.shop.global", RecordType::SRV),
    )
    .await;
    assert_eq!(m.answers.len(), 4, "{what}: {m:?}");
    // A name whose answer needs TCP (150 addresses) comes through whole.
    let m = query(resolver, &Ask::new("big.shop.global", RecordType::A).tcp()).await;
    assert_eq!(m.answers.len(), 150, "{what}: big answer over TCP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_stub_zone() {
    let f = Fleet::start(&["--max-answers", "200"]).await;
    let dir = TempDir::new("unbound");
    let (_unbound, addr) = Unbound {
        listen: "127.0.0.1",
        outgoing: None,
        stub: Some(f.server.dns),
        no_cache: false,
    }
    .start(dir.path());
    let port = addr.port();
    through(port, "unbound").await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsmasq_server_for_the_zone() {
    let f = Fleet::start(&["--max-answers", "200"]).await;
    let dir = TempDir::new("dnsmasq");
    let server = format!("--server=/global/127.0.0.1#{}", f.server.dns.port());
    let pid_file = format!("--pid-file={}/dnsmasq.pid", dir.path().display());
    let (_dnsmasq, port) = meshdns_tests::Proc::start_on_free_port(
        &program("dnsmasq"),
        |port| {
            [
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                &format!("--port={port}"),
                &pid_file,
                "--user=root",
                &server,
            ]
            .iter()
            .map(|a| a.to_string())
            .collect()
        },
        Duration::from_millis(300),
    );
    through(port, "dnsmasq").await;
    f.stop().await;
}

/// CoreDNS's forward plugin probes upstreams with `. IN NS`, RD set: it
/// must get a fast answer (REFUSED: not our zone).
#[tokio::test]
async fn health_probe_gets_a_fast_refusal() {
    let f = Fleet::start(&[]).await;
    let mut ask = Ask::new(".", RecordType::NS);
    ask.edns = None;
    let started = std::time::Instant::now();
    let m = query(f.server.dns, &ask).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.metadata.recursion_desired && !m.metadata.recursion_available);
    assert!(started.elapsed() < Duration::from_secs(1));
    f.stop().await;
}

/// The glibc stub resolver, as a pod's libc uses it: `getent` in a network
/// and mount namespace where meshdns (the demo) listens on 127.0.0.1:53 and
/// /etc/resolv.conf names it. Needs root (CI runs as root).
#[test]
fn glibc_resolver_in_a_namespace() {
    let dir = TempDir::new("glibc");
    let resolv = dir.write(
        "resolv.conf",
        "nameserver 127.0.0.1\noptions attempts:2 timeout:2\n",
    );
    let script = format!(
        "set -e; PATH=$PATH:/usr/sbin:/sbin; ip link set lo up; mount --bind {resolv} /etc/resolv.conf; \
         {meshdns} demo --dir {dir} --dns-listen 127.0.0.1:53 --grpc-listen 127.0.0.1:7443 --admin-listen 127.0.0.1:9153 >/dev/null 2>&1 & \
         pid=$!; trap 'kill $pid' EXIT; \
         for i in $(seq 1 100); do getent hosts db-0.east-1.db.data.global >/dev/null 2>&1 && break; sleep 0.1; done; \
         echo ONE; getent hosts db-0.east-1.db.data.global; \
         echo MANY; getent hosts web.shop.global; \
         echo MISSING; getent hosts nope.shop.global || echo exit=$?",
        resolv = resolv.display(),
        meshdns = bin("meshdns").display(),
        dir = dir.path().join("demo").display(),
    );
    let out = Command::new(program("unshare"))
        .args(["--net", "--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "unshare needs root and iproute2: {text}"
    );
    let line_after = |name: &str| {
        text.split(&format!("{name}\n"))
            .nth(1)
            .and_then(|t| t.lines().next())
            .unwrap_or("")
            .to_owned()
    };
    let one = line_after("ONE");
    assert!(
        one.starts_with("10.1.2.10") && one.contains("db-0.east-1.db.data.global"),
        "{text}"
    );
    // getent hosts prints one address (IPv6 first): one of web.shop's.
    let many = line_after("MANY");
    let web = [
        "fd00:3::11",
        "10.1.0.11",
        "10.1.0.12",
        "10.2.0.11",
        "10.2.0.12",
        "10.3.0.11",
    ];
    assert!(web.iter().any(|ip| many.starts_with(ip)), "{text}");
    assert!(
        text.contains("exit=2"),
        "NXDOMAIN: getent exits 2 (not found): {text}"
    );
}
