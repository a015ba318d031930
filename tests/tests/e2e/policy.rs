//! The hub's traffic policy (`--policy FILE`) end to end: reloads (a bad
//! file keeps the policy in force, every error names its field, every
//! change logged and counted), drains moving shares of real answers,
//! `meshdns status` showing the policy, the state file keeping it across
//! a restart, and followers answering with their upstream's policy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use meshdns_proto::wire;
use meshdns_tests::dns::{Ask, addresses, query};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{
    Proc, ServeProc, TestServer, TestSyncer, bin, eventually, http_get, wait_clusters_live,
};

/// Three clusters: two in us-east, one in us-west. `web` answers from
/// every tier at once (affinity none) with 2 + 2 + 4 endpoints, so with
/// `--max-answers 1` each cluster's share of answers is its share of the
/// weight: 25% / 25% / 50%. `api` is nearest-first, in east-1 and
/// west-1 only; `solo` in east-1 only.
pub const EAST_1: &str = r#"
cluster: east-1
region: us-east
zone: us-east-1a
clientCIDRs: [127.0.0.2/32]
services:
  - {name: web, namespace: shop, affinity: none, ports: [{name: http, port: 80}], endpoints: [{ip: 10.1.0.1}, {ip: 10.1.0.2}]}
  - {name: api, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ip: 10.1.1.1}]}
  - {name: solo, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ip: 10.1.2.1}]}
"#;

pub const EAST_2: &str = r#"
cluster: east-2
region: us-east
zone: us-east-1b
clientCIDRs: [127.0.0.3/32]
services:
  - {name: web, namespace: shop, affinity: none, ports: [{name: http, port: 80}], endpoints: [{ip: 10.2.0.1}, {ip: 10.2.0.2}]}
"#;

pub const WEST_1: &str = r#"
cluster: west-1
region: us-west
zone: us-west-1a
clientCIDRs: [127.0.0.4/32]
services:
  - {name: web, namespace: shop, affinity: none, ports: [{name: http, port: 80}], endpoints: [{ip: 10.3.0.1}, {ip: 10.3.0.2}, {ip: 10.3.0.3}, {ip: 10.3.0.4}]}
  - {name: api, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ip: 10.3.1.1}]}
"#;

/// West-1 with every `web` endpoint down: only the drained clusters are
/// left to answer it.
const WEST_1_DOWN: &str = r#"
cluster: west-1
region: us-west
zone: us-west-1a
clientCIDRs: [127.0.0.4/32]
services:
  - {name: web, namespace: shop, affinity: none, ports: [{name: http, port: 80}], endpoints: [{ip: 10.3.0.1, ready: false}]}
  - {name: api, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ip: 10.3.1.1}]}
"#;

/// The askers, one per cluster: (cluster, source address).
pub const ASKERS: [(&str, &str); 3] = [
    ("east-1", "127.0.0.2"),
    ("east-2", "127.0.0.3"),
    ("west-1", "127.0.0.4"),
];

/// The cluster an answered address belongs to.
pub fn owner(address: &str) -> &'static str {
    match address.split('.').nth(1) {
        Some("1") => "east-1",
        Some("2") => "east-2",
        Some("3") => "west-1",
        _ => "unknown",
    }
}

/// A registry with `--policy` and three file-source syncers.
pub struct PolicyFleet {
    pub server: TestServer,
    pub syncers: Vec<TestSyncer>,
    pub dir: TempDir,
    pub policy: PathBuf,
}

impl PolicyFleet {
    /// Starts the fleet with `policy` as the policy file's text and
    /// `--max-answers 1` plus `extra` server flags.
    pub async fn start(policy: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new("policy");
        let path = dir.write("policy.yaml", policy);
        let path_flag = path.display().to_string();
        let mut flags = vec!["--policy", &path_flag, "--max-answers", "1"];
        flags.extend_from_slice(extra);
        let server = TestServer::start(&flags).await;
        let syncers = [
            ("east-1.yaml", EAST_1),
            ("east-2.yaml", EAST_2),
            ("west-1.yaml", WEST_1),
        ]
        .into_iter()
        .map(|(name, text)| TestSyncer::start(&dir.write(name, text), &[server.grpc_url()], &[]))
        .collect();
        let fleet = PolicyFleet {
            server,
            syncers,
            dir,
            policy: path,
        };
        fleet.wait_live().await;
        fleet
    }

    pub async fn wait_live(&self) {
        wait_clusters_live(self.server.grpc_url(), 3, Duration::from_secs(15)).await;
    }

    /// Rewrites the policy file and waits until the registry serves the
    /// policy it says (`drain` of `cluster`), or reports `errors` reloads
    /// refused.
    pub fn write_policy(&self, text: &str) {
        self.dir.write("policy.yaml", text);
    }

    pub async fn stop(self) {
        for s in self.syncers {
            s.stop().await;
        }
        self.server.stop().await;
    }
}

/// The value of a metric series (`name{labels}`) on `admin`.
pub async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = http_get(admin, "/metrics").await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Policy reloads refused so far (`meshdns_policy_reloads_total`'s
/// `error` series).
const RELOAD_ERRORS: &str = "meshdns_policy_reloads_total{result=\"error\"}";

/// The drain the registry reports for `cluster` (ListClusters' policy).
pub async fn drain_of(url: &str, cluster: &str) -> Option<u32> {
    let auth = meshdns_proto::client::ClientAuth {
        insecure: true,
        ..Default::default()
    };
    let mut client = auth.connect(url).await.ok()?;
    let listed = client
        .list_clusters(wire::ListClustersRequest {})
        .await
        .ok()?
        .into_inner();
    let policy = listed.policy?;
    Some(
        policy
            .clusters
            .iter()
            .find(|c| c.cluster == cluster)
            .map_or(0, |c| c.drain_percent),
    )
}

/// Waits until the registry at `url` reports `drain` for `cluster`.
pub async fn wait_drain(url: &str, cluster: &str, drain: u32) {
    eventually(
        Duration::from_secs(10),
        &format!("{cluster} drained {drain}%"),
        || async move { (drain_of(url, cluster).await == Some(drain)).then_some(()) },
    )
    .await;
}

/// Each cluster's share of the addresses `n` queries for `name` from
/// `source` got back.
pub async fn shares(dns: SocketAddr, name: &str, source: &str, n: usize) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    let mut total = 0.0;
    for _ in 0..n {
        let m = query(dns, &Ask::new(name, RecordType::A).from(source)).await;
        for address in addresses(&m) {
            *counts.entry(owner(&address).to_owned()).or_default() += 1.0;
            total += 1.0;
        }
    }
    for v in counts.values_mut() {
        *v /= total;
    }
    counts
}

fn share(shares: &BTreeMap<String, f64>, cluster: &str) -> f64 {
    shares.get(cluster).copied().unwrap_or(0.0)
}

/// A bad file keeps the policy in force, its error names the field, the
/// error is counted once; a good file after it is applied, each change
/// logged as what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_file_keeps_the_last_good_one() {
    let dir = TempDir::new("policy-reload");
    let path = dir.write("policy.yaml", "clusters:\n  east-1:\n    drain: 10\n");
    let path_flag = path.display().to_string();
    let server = ServeProc::start(&["--policy", &path_flag]).await;
    let url = server.grpc_url();
    wait_drain(&url, "east-1", 10).await;
    let ok = "meshdns_policy_reloads_total{result=\"ok\"}";
    let error = RELOAD_ERRORS;
    assert_eq!(metric(server.admin, ok).await, Some(1.0));
    assert_eq!(metric(server.admin, error).await, Some(0.0));
    // Out of range: refused, named, counted once however long it stays.
    dir.write("policy.yaml", "clusters:\n  east-1:\n    drain: 120\n");
    server
        .logs
        .wait(Duration::from_secs(10), "the drain error", |l| {
            l.contains("clusters.east-1.drain: 120 is above 100")
                .then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(metric(server.admin, error).await, Some(1.0));
    assert_eq!(
        drain_of(&url, "east-1").await,
        Some(10),
        "the last good policy stays"
    );
    assert_eq!(
        metric(
            server.admin,
            "meshdns_policy_drain_percent{cluster=\"east-1\"}"
        )
        .await,
        Some(10.0)
    );
    // An unknown key (a typo) is refused too, naming where.
    dir.write("policy.yaml", "clusters:\n  east-1:\n    drian: 50\n");
    server
        .logs
        .wait(Duration::from_secs(10), "the typo's error", |l| {
            (l.contains("policy file rejected") && l.contains("drian")).then_some(())
        })
        .await;
    assert_eq!(metric(server.admin, error).await, Some(2.0));
    assert_eq!(drain_of(&url, "east-1").await, Some(10));
    // A good one is applied and its change logged.
    dir.write(
        "policy.yaml",
        "clusters:\n  east-1:\n    drain: 50\n    provider: aws\n",
    );
    wait_drain(&url, "east-1", 50).await;
    server
        .logs
        .wait(Duration::from_secs(10), "the change logged", |l| {
            l.contains("cluster east-1 drain 10% → 50%").then_some(())
        })
        .await;
    assert!(
        server
            .logs
            .count("cluster east-1 provider (announced) → aws")
            == 1
    );
    assert_eq!(metric(server.admin, ok).await, Some(2.0));
    assert_eq!(
        metric(
            server.admin,
            "meshdns_policy_drain_percent{cluster=\"east-1\"}"
        )
        .await,
        Some(50.0)
    );
}

/// `meshdns serve` with `flags` must stop at start, failing: its log.
pub fn serve_refuses(flags: &[&str]) -> String {
    let mut args = vec!["serve", "--insecure"];
    args.extend_from_slice(&meshdns_tests::LOOPBACK_PORT_0);
    args.extend_from_slice(flags);
    let (mut proc, logs) = Proc::start_logged("meshdns", &args);
    let status = proc.wait_exit(Duration::from_secs(20));
    // Let the log reader take the last line.
    std::thread::sleep(Duration::from_millis(200));
    let text = logs.text();
    assert!(
        status.is_some_and(|s| !s.success()),
        "meshdns {args:?} did not stop failing ({status:?}):\n{text}"
    );
    text
}

/// A bad policy file at start, with nothing to keep, does not stop the
/// server (a restart would read the same file and crash-loop): it starts
/// with no policy, counts the error, and takes the file once it is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_file_at_start_starts_with_no_policy() {
    let dir = TempDir::new("policy-start");
    let path = dir.write(
        "policy.yaml",
        "services:\n  shop/web:\n    drain: {east-1: 101}\n",
    );
    let server = TestServer::start(&["--policy", &path.display().to_string()]).await;
    assert_eq!(metric(server.admin, RELOAD_ERRORS).await, Some(1.0));
    assert!(matches!(
        drain_of(&server.grpc_url(), "east-1").await,
        None | Some(0)
    ));
    dir.write("policy.yaml", "clusters:\n  east-1:\n    drain: 30\n");
    wait_drain(&server.grpc_url(), "east-1", 30).await;
    assert_eq!(metric(server.admin, RELOAD_ERRORS).await, Some(1.0));
    server.stop().await;
}

/// Drain 50 halves a cluster's weight against the others (real DNS
/// answers); 100 takes it out of answers, except as the last resort when
/// nothing else is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_move_shares_of_real_answers() {
    let fleet = PolicyFleet::start("{}", &[]).await;
    let (dns, url) = (fleet.server.dns, fleet.server.grpc_url());
    let n = 400;
    let before = shares(dns, "web.shop.global", "127.0.0.4", n).await;
    // 2 : 2 : 4 endpoints of equal weight.
    assert!((share(&before, "east-1") - 0.25).abs() < 0.06, "{before:?}");
    assert!((share(&before, "west-1") - 0.50).abs() < 0.06, "{before:?}");
    fleet.write_policy("clusters:\n  east-1:\n    drain: 50\n");
    wait_drain(&url, "east-1", 50).await;
    let half = shares(dns, "web.shop.global", "127.0.0.4", n).await;
    // Weights 1 : 2 : 4 → east-1 1/7, east-2 2/7, west-1 4/7.
    let ratio = share(&half, "east-1") / share(&half, "east-2");
    assert!(
        (ratio - 0.5).abs() < 0.15,
        "east-1 / east-2 = {ratio}: {half:?}"
    );
    assert!(
        (share(&half, "east-1") - 1.0 / 7.0).abs() < 0.05,
        "{half:?}"
    );
    fleet.write_policy("clusters:\n  east-1:\n    drain: 100\n");
    wait_drain(&url, "east-1", 100).await;
    let gone = shares(dns, "web.shop.global", "127.0.0.4", n).await;
    assert_eq!(share(&gone, "east-1"), 0.0, "{gone:?}");
    assert!(
        (share(&gone, "west-1") - 2.0 / 3.0).abs() < 0.06,
        "{gone:?}"
    );
    // The last resort: east-2 drained too and west-1 down, east-1 and
    // east-2 answer (weight 0 answers only when nothing else is healthy).
    fleet.write_policy("clusters:\n  east-1:\n    drain: 100\n  east-2:\n    drain: 100\n");
    wait_drain(&url, "east-2", 100).await;
    fleet.dir.write("west-1.yaml", WEST_1_DOWN);
    let last = eventually(
        Duration::from_secs(10),
        "the last resort answers",
        || async move {
            let m = query(
                dns,
                &Ask::new("web.shop.global", RecordType::A).from("127.0.0.4"),
            )
            .await;
            let got = addresses(&m);
            (!got.is_empty() && got.iter().all(|a| owner(a) != "west-1")).then_some(got)
        },
    )
    .await;
    assert!(
        last.iter()
            .all(|a| ["east-1", "east-2"].contains(&owner(a))),
        "{last:?}"
    );
    fleet.stop().await;
}

/// Runs a `meshdns` client command (`status`, `drill`), killed by its PID
/// if it has not ended within a minute: (succeeded, stdout, stderr).
pub async fn meshdns_run(args: &[&str]) -> (bool, String, String) {
    let dir = TempDir::new("cli");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let child = std::process::Command::new(bin("meshdns"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut proc = Proc(child);
    let status = tokio::task::spawn_blocking(move || {
        let status = proc.wait_exit(Duration::from_secs(60));
        drop(proc);
        status
    })
    .await
    .unwrap();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let (stdout, stderr) = (read(&out), read(&err));
    let status = status.unwrap_or_else(|| panic!("meshdns {args:?} did not end:\n{stderr}"));
    (status.success(), stdout, stderr)
}

/// Runs a `meshdns` client command that must succeed: its stdout.
pub async fn meshdns(args: &[&str]) -> String {
    let (ok, stdout, stderr) = meshdns_run(args).await;
    assert!(ok, "meshdns {args:?}: {stderr}");
    stdout
}

/// `meshdns status` shows the policy in force, as text and JSON, and a
/// service's own overrides with `--service`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_policy() {
    let policy = "clusters:\n  east-1:\n    drain: 50\n    provider: aws\n  west-1:\n    weight: 200\nservices:\n  shop/web:\n    drain: {east-2: 100}\n    failover: [us-west]\n    minHealthy: 50%\nregions:\n  us-east:\n    failover: [us-west]\n";
    let fleet = PolicyFleet::start(policy, &[]).await;
    let url = fleet.server.grpc_url();
    let text = meshdns(&["status", "--insecure", "--registry", &url]).await;
    // The policy section follows the cluster table.
    let section = &text[text
        .find("\npolicy ")
        .unwrap_or_else(|| panic!("no policy in:\n{text}"))..];
    let line = |prefix: &str| {
        section
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line("east-1 "), ["east-1", "100%", "50%", "aws"][..]);
    assert_eq!(line("east-2 "), ["east-2", "100%", "0%", "-"][..]);
    assert_eq!(line("west-1 "), ["west-1", "200%", "0%", "-"][..]);
    assert_eq!(
        line("shop/web "),
        ["shop/web", "-", "east-2=100%", "region:us-west", "-", "50%"][..]
    );
    assert_eq!(line("us-east "), ["us-east", "region:us-west"][..]);
    let json: serde_json::Value = serde_json::from_str(
        &meshdns(&[
            "status",
            "--insecure",
            "--registry",
            &url,
            "--output",
            "json",
        ])
        .await,
    )
    .unwrap();
    let clusters = json["policy"]["clusters"].as_array().unwrap();
    let east = clusters.iter().find(|c| c["cluster"] == "east-1").unwrap();
    assert_eq!(east["drain_percent"], 50);
    assert_eq!(east["provider"], "aws");
    assert_eq!(
        json["policy"]["services"][0]["drain_percent"]["east-2"],
        100
    );
    assert_eq!(json["policy"]["services"][0]["min_healthy"], "50%");
    assert_eq!(
        json["policy"]["sha256"].as_str().unwrap().len(),
        64,
        "{json}"
    );
    let service = meshdns(&[
        "status",
        "--insecure",
        "--registry",
        &url,
        "--service",
        "web.shop",
    ])
    .await;
    assert!(
        service.contains("policy: drain east-2=100%; failover region:us-west; min-healthy 50%"),
        "{service}"
    );
    fleet.stop().await;
}

/// The state file keeps the policy: a hub restarted while its policy file
/// cannot be read answers with the last policy (and says so); without a
/// state file the same start has no policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_file_keeps_the_policy_across_a_restart() {
    let state = TempDir::new("policy-state");
    let (_, state_flag) = state.state_file();
    let fleet = PolicyFleet::start(
        "clusters:\n  east-1:\n    drain: 100\n",
        &["--state-file", &state_flag],
    )
    .await;
    let url = fleet.server.grpc_url();
    wait_drain(&url, "east-1", 100).await;
    let grpc = fleet.server.grpc;
    let PolicyFleet {
        server,
        syncers,
        dir,
        policy,
    } = fleet;
    server.stop().await;
    // The policy file is gone (a ConfigMap not mounted yet).
    std::fs::remove_file(&policy).unwrap();
    let policy_flag = policy.display().to_string();
    let restarted = TestServer::start_at(
        grpc,
        &[
            "--policy",
            &policy_flag,
            "--state-file",
            &state_flag,
            "--max-answers",
            "1",
        ],
    )
    .await;
    assert_eq!(drain_of(&restarted.grpc_url(), "east-1").await, Some(100));
    assert_eq!(metric(restarted.admin, RELOAD_ERRORS).await, Some(1.0));
    // Once the syncers are back (live), east-1 stays out of answers.
    wait_clusters_live(restarted.grpc_url(), 3, Duration::from_secs(15)).await;
    let got = shares(restarted.dns, "web.shop.global", "127.0.0.4", 200).await;
    assert_eq!(share(&got, "east-1"), 0.0, "{got:?}");
    assert!(share(&got, "west-1") > 0.5, "{got:?}");
    // The file comes back with another drain: applied.
    dir.write("policy.yaml", "clusters:\n  east-1:\n    drain: 0\n");
    wait_drain(&restarted.grpc_url(), "east-1", 0).await;
    for s in syncers {
        s.stop().await;
    }
    restarted.stop().await;
    // No state file and no readable policy file: no policy, counted.
    std::fs::remove_file(dir.path().join("policy.yaml")).unwrap();
    let bare = TestServer::start(&["--policy", &policy_flag]).await;
    assert!(matches!(
        drain_of(&bare.grpc_url(), "east-1").await,
        None | Some(0)
    ));
    assert_eq!(metric(bare.admin, RELOAD_ERRORS).await, Some(1.0));
    bare.stop().await;
}

/// A follower answers with its upstream's policy, and follows its
/// changes; the policy hash is the same on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_answer_with_the_upstream_policy() {
    let fleet = PolicyFleet::start("clusters:\n  east-1:\n    drain: 100\n", &[]).await;
    let upstream = fleet.server.grpc_url();
    let follower = TestServer::start(&["--follow", &upstream, "--max-answers", "1"]).await;
    let url = follower.grpc_url();
    wait_drain(&url, "east-1", 100).await;
    let info = |admin| async move {
        let (_, body) = http_get(admin, "/metrics").await.ok()?;
        body.lines()
            .find(|l| l.starts_with("meshdns_policy_info{"))
            .map(str::to_owned)
    };
    assert_eq!(info(follower.admin).await, info(fleet.server.admin).await);
    assert!(info(follower.admin).await.is_some());
    eventually(
        Duration::from_secs(10),
        "the follower answers web",
        || async {
            let m = query(follower.dns, &Ask::new("web.shop.global", RecordType::A)).await;
            (!addresses(&m).is_empty()).then_some(())
        },
    )
    .await;
    let got = shares(follower.dns, "web.shop.global", "127.0.0.4", 200).await;
    assert_eq!(share(&got, "east-1"), 0.0, "{got:?}");
    fleet.write_policy("clusters:\n  east-1:\n    drain: 0\n  west-1:\n    drain: 100\n");
    wait_drain(&url, "west-1", 100).await;
    let got = shares(follower.dns, "web.shop.global", "127.0.0.4", 200).await;
    assert_eq!(share(&got, "west-1"), 0.0, "{got:?}");
    assert!(share(&got, "east-1") > 0.3, "{got:?}");
    // A follower refuses a policy file of its own.
    assert!(
        serve_refuses(&["--follow", &upstream, "--policy", "/nonexistent"])
            .contains("a follower (--follow) answers with its upstream's policy")
    );
    follower.stop().await;
    fleet.stop().await;
}
