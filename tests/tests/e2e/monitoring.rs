//! deploy/monitoring against live processes: every metric the alert rules
//! and the Grafana dashboard name exists on a live hub, follower or
//! syncer; the PrometheusRule carries the rules file's groups; and a real
//! Prometheus (Debian's `prometheus`, on loopback) scraping a live
//! `meshdns serve` fires the stale-cluster alert when a syncer is killed,
//! and resolves it when the syncer is back.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshdns_tests::fleet::{EAST_1, TempDir};
use meshdns_tests::{Proc, eventually, free_port, http_get};
use serde_json::Value;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(monitoring().join(name)).unwrap()
}

fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Mints the fleet PKI (deploy/certs/mint.sh) with `east-1` and a
/// `follower` reader into `dir/pki`.
fn mint(dir: &TempDir) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/certs/mint.sh");
    let out = dir.path().join("pki");
    let status = Command::new("bash")
        .arg(script)
        .arg(&out)
        .args(["--cluster", "east-1", "--reader", "follower"])
        .stdout(Stdio::null())
        .status()
        .expect("bash and openssl");
    assert!(status.success(), "mint.sh failed");
    out
}

/// The PromQL expressions of the rules file.
fn rule_exprs(rules: &str) -> Vec<String> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(rules).unwrap();
    let mut exprs = Vec::new();
    for group in doc["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            exprs.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs
}

/// The PromQL expressions of the dashboard: every panel target, and the
/// template variables' queries.
fn dashboard_exprs(dashboard: &str) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(list) => list.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&serde_json::from_str(dashboard).unwrap(), &mut out);
    out
}

/// The `meshdns_*` metric names an expression reads (recording rules'
/// `meshdns:*` names are the rules' own).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("meshdns_") {
        let boundary = at == 0 || {
            let before = rest.as_bytes()[at - 1];
            !(before.is_ascii_alphanumeric() || before == b'_' || before == b':')
        };
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The sample names a Prometheus text exposition declares: each sample
/// line's name, and for each `# TYPE` the names its samples take (a
/// labelled counter with no child yet has no sample line).
fn exposed(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            if end > 0 {
                names.insert(line[..end].to_owned());
            }
        }
    }
    names
}

async fn scrape(admin: SocketAddr) -> Option<String> {
    let (status, body) = http_get(admin, "/metrics").await.ok()?;
    (status == 200).then_some(body)
}

#[test]
fn prometheus_rule_matches_the_rules_file() {
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read("meshdns.rules.yml")).unwrap();
    let object: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("prometheusrule.yaml")).unwrap();
    assert_eq!(object["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(
        object["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(object["spec"]["groups"], rules["groups"]);
}

/// A TLS hub, a syncer with a client certificate, and a follower with a
/// reader certificate, as processes: the union of their `/metrics` holds
/// every metric the rules and the dashboard read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_read_only_metrics_that_exist() {
    let dir = TempDir::new("monitoring-names");
    let pki = mint(&dir);
    let pem = |name: &str| pki.join(name).display().to_string();
    let export = dir.write("east-1.yaml", EAST_1);
    let (hub_grpc, hub_admin) = (free_port(), free_port());
    let _hub = Proc::start(
        "meshdns",
        &[
            "serve",
            "--tls-cert",
            &pem("server.crt"),
            "--tls-key",
            &pem("server.key"),
            "--tls-client-ca",
            &pem("ca.crt"),
            "--dns-listen",
            &loopback(free_port()),
            "--grpc-listen",
            &loopback(hub_grpc),
            "--admin-listen",
            &loopback(hub_admin),
        ],
    );
    let upstream = format!("https://{}", loopback(hub_grpc));
    let syncer_admin = free_port();
    let _syncer = Proc::start(
        "meshdns-syncer",
        &[
            "--source",
            &format!("file:{}", export.display()),
            "--registry",
            &upstream,
            "--tls-ca",
            &pem("ca.crt"),
            "--tls-cert",
            &pem("cluster-east-1.crt"),
            "--tls-key",
            &pem("cluster-east-1.key"),
            "--heartbeat",
            "200ms",
            "--admin-listen",
            &loopback(syncer_admin),
        ],
    );
    let follower_admin = free_port();
    let _follower = Proc::start(
        "meshdns",
        &[
            "serve",
            "--insecure",
            "--follow",
            &upstream,
            "--follow-tls-ca",
            &pem("ca.crt"),
            "--follow-tls-cert",
            &pem("reader-follower.crt"),
            "--follow-tls-key",
            &pem("reader-follower.key"),
            "--dns-listen",
            &loopback(free_port()),
            "--grpc-listen",
            &loopback(free_port()),
            "--admin-listen",
            &loopback(follower_admin),
        ],
    );
    let admin = |port: u16| -> SocketAddr { loopback(port).parse().unwrap() };
    let hub = eventually(
        Duration::from_secs(20),
        "east-1 live on the hub",
        || async {
            scrape(admin(hub_admin))
                .await
                .filter(|t| t.contains("meshdns_cluster_live{cluster=\"east-1\"} 1"))
        },
    )
    .await;
    let follower = eventually(
        Duration::from_secs(20),
        "the follower mirroring the hub",
        || async {
            scrape(admin(follower_admin))
                .await
                .filter(|t| t.contains("meshdns_follow_upstream_connected 1"))
        },
    )
    .await;
    let syncer = eventually(Duration::from_secs(20), "the syncer's metrics", || async {
        scrape(admin(syncer_admin))
            .await
            .filter(|t| !t.contains("meshdns_syncer_exported_services 0"))
    })
    .await;
    // The certificates each process uses are reported.
    for (text, certificate) in [
        (&hub, "server"),
        (&hub, "client_ca"),
        (&follower, "follow_client"),
        (&syncer, "client"),
    ] {
        assert!(
            text.contains(&format!(
                "meshdns_tls_certificate_expiry_timestamp_seconds{{certificate=\"{certificate}\"}}"
            )),
            "{certificate} expiry missing in\n{text}"
        );
    }
    let live: BTreeSet<String> = [&hub, &follower, &syncer]
        .iter()
        .flat_map(|t| exposed(t))
        .collect();
    let mut names_read = BTreeSet::new();
    for (what, exprs) in [
        (
            "meshdns.rules.yml",
            rule_exprs(&read_file("meshdns.rules.yml")),
        ),
        (
            "grafana-dashboard.json",
            dashboard_exprs(&read_file("grafana-dashboard.json")),
        ),
    ] {
        assert!(!exprs.is_empty(), "{what}: no expressions found");
        for expr in exprs {
            for name in metric_names(&expr) {
                assert!(
                    live.contains(&name),
                    "{what} reads {name}, which no live /metrics has (in: {expr})"
                );
                names_read.insert(name);
            }
        }
    }
    // The check reads the files' metrics at all: a dozen and more.
    assert!(names_read.len() > 20, "{names_read:?}");
}

fn read_file(name: &str) -> String {
    read(name)
}

/// The rules file with every `for:` window cut to `window`, for a test
/// that cannot wait minutes.
fn rules_with_window(window: &str) -> String {
    read("meshdns.rules.yml")
        .lines()
        .map(|line| match line.trim_start().strip_prefix("for: ") {
            Some(_) => format!(
                "{}for: {window}",
                &line[..line.len() - line.trim_start().len()]
            ),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prometheus's alerts named `name` for cluster `cluster`, with their state.
async fn alerts(prometheus: SocketAddr, name: &str, cluster: &str) -> Option<Vec<String>> {
    let (status, body) = http_get(prometheus, "/api/v1/alerts").await.ok()?;
    if status != 200 {
        return None;
    }
    let reply: Value = serde_json::from_str(&body).ok()?;
    Some(
        reply["data"]["alerts"]
            .as_array()?
            .iter()
            .filter(|a| a["labels"]["alertname"] == name && a["labels"]["cluster"] == cluster)
            .map(|a| a["state"].as_str().unwrap_or("").to_owned())
            .collect(),
    )
}

fn start_syncer(export: &Path, grpc: u16) -> Proc {
    Proc::file_syncer(
        export,
        &format!("http://{}", loopback(grpc)),
        &["--max-backoff", "500ms"],
    )
}

/// The stale-cluster alert in a real Prometheus: scrape every second, the
/// rules' `for:` windows cut to 2s, `--cluster-ttl 2s`. Killing the
/// syncer fires MeshdnsClusterStale for its cluster within the TTL, the
/// window and a few scrape and evaluation periods; restarting it resolves
/// the alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_cluster_alert_fires_and_resolves_in_prometheus() {
    let dir = TempDir::new("monitoring-alert");
    let export = dir.write("east-1.yaml", EAST_1);
    let (grpc, admin) = (free_port(), free_port());
    let _hub = Proc::start(
        "meshdns",
        &[
            "serve",
            "--insecure",
            "--cluster-ttl",
            "2s",
            "--dns-listen",
            &loopback(free_port()),
            "--grpc-listen",
            &loopback(grpc),
            "--admin-listen",
            &loopback(admin),
        ],
    );
    let mut syncer = start_syncer(&export, grpc);
    let rules = dir.write("rules.yml", &rules_with_window("2s"));
    let prometheus_port = free_port();
    let config = dir.write(
        "prometheus.yml",
        &format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{}]\n\
             scrape_configs:\n\
             \x20 - job_name: meshdns\n\
             \x20   static_configs: [{{targets: ['{}']}}]\n",
            rules.display(),
            loopback(admin)
        ),
    );
    let quiet = std::env::var_os("MESHDNS_TEST_LOG").is_none();
    let _prometheus = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!(
                "--web.listen-address={}",
                loopback(prometheus_port)
            ))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(if quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("prometheus (Debian's prometheus package; scripts/test installs it)"),
    );
    let prometheus: SocketAddr = loopback(prometheus_port).parse().unwrap();
    // Prometheus has scraped the live cluster and evaluated the rules.
    eventually(
        Duration::from_secs(30),
        "prometheus scraping east-1 as live",
        || async {
            let (_, body) = http_get(
                prometheus,
                "/api/v1/query?query=meshdns_cluster_live%7Bcluster%3D%22east-1%22%7D",
            )
            .await
            .ok()?;
            let reply: Value = serde_json::from_str(&body).ok()?;
            (reply["data"]["result"][0]["value"][1] == "1").then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        alerts(prometheus, "MeshdnsClusterStale", "east-1").await,
        Some(vec![]),
        "no alert while the cluster is live"
    );
    syncer.signal("KILL");
    let _ = syncer.wait_exit(Duration::from_secs(5));
    let killed = Instant::now();
    eventually(
        Duration::from_secs(30),
        "MeshdnsClusterStale firing",
        || async {
            alerts(prometheus, "MeshdnsClusterStale", "east-1")
                .await
                .filter(|states| states.iter().any(|s| s == "firing"))
        },
    )
    .await;
    // TTL 2s + window 2s + a scrape and two evaluations, with slack for
    // a loaded machine.
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "fired after {took:?}");
    let _syncer = start_syncer(&export, grpc);
    eventually(
        Duration::from_secs(30),
        "MeshdnsClusterStale resolved",
        || async {
            alerts(prometheus, "MeshdnsClusterStale", "east-1")
                .await
                .filter(Vec::is_empty)
        },
    )
    .await;
}

#[test]
fn metric_names_are_read_from_expressions() {
    let names = metric_names(
        "sum by (le) (rate(meshdns_dns_answer_duration_seconds_bucket{instance=~\"$i\"}[5m])) / meshdns:dns_queries:rate5m + meshdns_x",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["meshdns_dns_answer_duration_seconds_bucket", "meshdns_x"]
    );
    let text = "# TYPE meshdns_a counter\n# TYPE meshdns_h histogram\nmeshdns_g{x=\"1\"} 2\n";
    let names = exposed(text);
    for name in [
        "meshdns_a_total",
        "meshdns_h_bucket",
        "meshdns_h_count",
        "meshdns_g",
    ] {
        assert!(names.contains(name), "{name}");
    }
}

/// A change a syncer sees reaches `meshdns_propagation_seconds`: the
/// syncer stamps its Delta, the hub observes the lag once it answers.
/// The Snapshot sent on connect is not a change and is not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_observed_in_the_propagation_histogram() {
    use hickory_proto::rr::RecordType;
    use meshdns_tests::dns::{Ask, addresses, poll};
    use meshdns_tests::{TestServer, TestSyncer};
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("propagation");
    let file = dir.write("east-1.yaml", EAST_1);
    let syncer = TestSyncer::start(&file, &[server.grpc_url()], &[]);
    let dns = server.dns;
    let count = |text: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix("meshdns_propagation_seconds_count "))
            .and_then(|v| v.trim().parse().ok())
    };
    eventually(Duration::from_secs(10), "east-1 answers", || async move {
        let m = poll(dns, &Ask::new("web.shop.global", RecordType::A)).await?;
        (addresses(&m).len() == 2).then_some(())
    })
    .await;
    let before = scrape(server.admin).await.unwrap();
    assert_eq!(count(&before), Some(0), "the Snapshot is not counted");
    dir.write("east-1.yaml", &EAST_1.replace("10.1.0.12", "10.1.0.99"));
    let after = eventually(Duration::from_secs(10), "the change observed", || async {
        scrape(server.admin)
            .await
            .filter(|t| count(t).is_some_and(|n| n >= 1))
    })
    .await;
    // Loopback, one clock: well under a second.
    assert!(
        after.contains("meshdns_propagation_seconds_bucket{le=\"1.0\"} 1"),
        "{after}"
    );
    syncer.stop().await;
    server.stop().await;
}
