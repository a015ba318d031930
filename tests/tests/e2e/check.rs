//! `meshdns check` over real processes: a hub with a token file, syncers,
//! unbound in front. A healthy fleet passes every check; each failure it
//! claims to detect fails its check, with exit code 1: a wrong token, an
//! unreachable registry, overlapping client CIDRs, and a resolver that
//! does not forward `global`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use meshdns_tests::dns::{Ask, addresses, poll};
use meshdns_tests::fleet::{EAST_1, EAST_2, TempDir};
use meshdns_tests::unbound::Unbound;
use meshdns_tests::{Proc, bin, eventually, free_port};
use serde_json::Value;

/// Tokens are at least 16 characters.
const TOKENS: &str = "\
east-1-token-0123456789 cluster:east-1
east-2-token-0123456789 cluster:east-2
east-3-token-0123456789 cluster:east-3
ops-token-0123456789 reader:ops
";
const READER: &str = "ops-token-0123456789";

/// A hub (token file) and file-source syncers, as processes.
struct Hub {
    dir: TempDir,
    dns: u16,
    grpc: u16,
    _hub: Proc,
    _syncers: Vec<Proc>,
}

impl Hub {
    /// Starts the hub and a syncer per (cluster, export file), and waits
    /// until `web.shop.global` answers `web` addresses.
    async fn start(exports: &[(&str, &str)], web: usize) -> Self {
        let dir = TempDir::new("check");
        let tokens = dir.write("tokens", TOKENS);
        let (dns, grpc) = (free_port(), free_port());
        let hub = Proc::start(
            "meshdns",
            &[
                "serve",
                "--insecure",
                "--token-file",
                &tokens.display().to_string(),
                "--dns-listen",
                &format!("127.0.0.1:{dns}"),
                "--grpc-listen",
                &format!("127.0.0.1:{grpc}"),
                "--admin-listen",
                &format!("127.0.0.1:{}", free_port()),
            ],
        );
        let mut syncers = Vec::new();
        for (cluster, text) in exports {
            let file = dir.write(&format!("{cluster}.yaml"), text);
            let token = dir.write(
                &format!("{cluster}.token"),
                &format!("{cluster}-token-0123456789\n"),
            );
            syncers.push(Proc::file_syncer(
                &file,
                &format!("http://127.0.0.1:{grpc}"),
                &["--token-file", &token.display().to_string()],
            ));
        }
        let hub = Hub {
            dir,
            dns,
            grpc,
            _hub: hub,
            _syncers: syncers,
        };
        let dns = format!("127.0.0.1:{dns}").parse().unwrap();
        eventually(
            Duration::from_secs(20),
            "web.shop from every cluster",
            || async move {
                let m = poll(dns, &Ask::new("web.shop.global", RecordType::A)).await?;
                (addresses(&m).len() == web).then_some(())
            },
        )
        .await;
        hub
    }

    fn registry(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    fn dns(&self) -> String {
        format!("127.0.0.1:{}", self.dns)
    }

    /// A token file holding `token`.
    fn token(&self, token: &str) -> PathBuf {
        self.dir
            .write(&format!("{token}.file"), &format!("{token}\n"))
    }

    /// `meshdns check` against this hub with `token` and `extra` flags:
    /// exit code and report.
    fn check(&self, token: &str, extra: &[&str]) -> (i32, Value) {
        let token = self.token(token).display().to_string();
        let (registry, dns) = (self.registry(), self.dns());
        let mut args = vec![
            "--registry",
            &registry,
            "--insecure",
            "--token-file",
            &token,
            "--dns",
            &dns,
        ];
        args.extend_from_slice(extra);
        check(&args)
    }
}

/// Runs `meshdns check --output json` with `args`: exit code and report.
fn check(args: &[&str]) -> (i32, Value) {
    let out = Command::new(bin("meshdns"))
        .arg("check")
        .args(args)
        .args(["--output", "json", "--timeout", "2s"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// The status and detail of the check named `name`.
fn outcome<'r>(report: &'r Value, name: &str) -> (&'r str, &'r str) {
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"));
    (
        check["status"].as_str().unwrap(),
        check["detail"].as_str().unwrap(),
    )
}

/// unbound on a free port, up; with `dns` it forwards `global` there.
async fn unbound(dir: &Path, dns: Option<u16>) -> (Proc, SocketAddr) {
    let (proc, resolver) = Unbound {
        listen: "127.0.0.1",
        outgoing: None,
        stub: dns.map(|port| SocketAddr::from(([127, 0, 0, 1], port))),
        no_cache: false,
    }
    .start(dir);
    eventually(Duration::from_secs(10), "unbound up", || async move {
        poll(resolver, &Ask::new("localhost", RecordType::A))
            .await
            .map(|_| ())
    })
    .await;
    (proc, resolver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_fleet_passes_every_check() {
    let hub = Hub::start(&[("east-1", EAST_1), ("east-2", EAST_2)], 3).await;
    let resolver = unbound(hub.dir.path(), Some(hub.dns)).await;
    let via = format!("127.0.0.1:{}", resolver.1.port());
    let (code, report) = hub.check(
        READER,
        &[
            "--name",
            "web.shop.global",
            "--via",
            &via,
            "--source",
            "127.0.0.2",
            "--expect-cluster",
            "east-1",
        ],
    );
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    for name in [
        "registry reachable",
        "credentials accepted",
        "dns over udp",
        "dns over tcp",
        "name resolves",
        "source cluster",
        "client CIDRs",
        "clusters live",
        "export streams",
        "versions",
        "via resolver",
    ] {
        assert_eq!(outcome(&report, name).0, "pass", "{name}: {report:#}");
    }
    // Why the source maps where it does.
    let (_, why) = outcome(&report, "source cluster");
    assert!(
        why.contains("east-1") && why.contains("127.0.0.2/32"),
        "{why}"
    );
    // An address in no client CIDR maps to none, which passes unless a
    // cluster is expected.
    let (code, report) = hub.check(
        READER,
        &["--source", "192.0.2.1", "--expect-cluster", "east-1"],
    );
    assert_eq!(code, 1, "{report:#}");
    let (status, why) = outcome(&report, "source cluster");
    assert_eq!(status, "fail");
    assert!(why.contains("no cluster"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_fails_the_credentials_check() {
    let hub = Hub::start(&[("east-1", EAST_1)], 2).await;
    for token in ["not-a-token-0123456789", "east-1-token-0123456789"] {
        let (code, report) = hub.check(token, &[]);
        assert_eq!(code, 1, "{token}: {report:#}");
        assert_eq!(outcome(&report, "registry reachable").0, "pass", "{token}");
        let (status, detail) = outcome(&report, "credentials accepted");
        assert_eq!(status, "fail", "{token}: {report:#}");
        assert!(
            detail.contains("Unauthenticated") || detail.contains("PermissionDenied"),
            "{detail}"
        );
        // DNS does not need credentials: it still passes.
        assert_eq!(outcome(&report, "dns over udp").0, "pass", "{token}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_fails_the_reachability_check() {
    let (code, report) = check(&[
        "--registry",
        &format!("http://127.0.0.1:{}", free_port()),
        "--insecure",
        "--dns",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(outcome(&report, "registry reachable").0, "fail");
    assert_eq!(outcome(&report, "credentials accepted").0, "skip");
    assert_eq!(outcome(&report, "dns over udp").0, "fail");
    assert_eq!(outcome(&report, "clusters live").0, "skip");
}

/// east-3 announces 127.0.0.0/24, which overlaps east-1's 127.0.0.2/32:
/// the hub refuses it from whichever came second, and check says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_client_cidrs_fail_the_cidr_check() {
    let east_3 = "cluster: east-3\nregion: us-east\nzone: us-east-1c\n\
                  clientCIDRs: [127.0.0.0/24]\nservices: []\n";
    let hub = Hub::start(&[("east-1", EAST_1), ("east-3", east_3)], 2).await;
    // east-3's Hello has been answered once it is listed.
    let report = eventually(Duration::from_secs(20), "east-3 listed", || async {
        let (code, report) = hub.check(READER, &[]);
        let (status, _) = outcome(&report, "client CIDRs");
        (code == 1 && status == "fail").then_some(report)
    })
    .await;
    let (_, detail) = outcome(&report, "client CIDRs");
    assert!(
        detail.contains("refused from east-")
            && detail.contains("127.0.0.0/24")
            && detail.contains("127.0.0.2/32"),
        "{detail}"
    );
    // The rest of the fleet is fine.
    assert_eq!(outcome(&report, "credentials accepted").0, "pass");
    assert_eq!(outcome(&report, "dns over tcp").0, "pass");
}

/// unbound without the stub zone for `global` cannot give what the hub
/// gives: the `--via` check fails and says to forward the zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_without_the_stub_zone_fails_the_via_check() {
    let hub = Hub::start(&[("east-1", EAST_1)], 2).await;
    let resolver = unbound(hub.dir.path(), None).await;
    let via = format!("127.0.0.1:{}", resolver.1.port());
    let (code, report) = hub.check(READER, &["--name", "web.shop.global", "--via", &via]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(outcome(&report, "name resolves").0, "pass");
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "via resolver")
        .unwrap();
    assert_eq!(check["status"], "fail", "{report:#}");
    assert!(
        check["hint"]
            .as_str()
            .unwrap()
            .contains("forward the global zone"),
        "{check:#}"
    );
}
