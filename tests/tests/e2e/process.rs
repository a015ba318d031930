//! The built binaries as a user runs them: `meshdns demo`, `meshdns serve`
//! with a real `meshdns-syncer` process, flag errors, signals.

use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use meshdns_tests::demo::DemoProc;
use meshdns_tests::dns::{Ask, addresses, poll, query, sorted};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{LOOPBACK_PORT_0, Proc, TestServer, bin, eventually, http_get};

fn run(program: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin(program)).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_answers_and_stops_on_sigterm() {
    let dir = TempDir::new("demo");
    let demo = DemoProc::start(dir.path(), &[]).await;
    let (dns, admin) = (demo.dns, demo.admin);
    let dns_port = dns.port();
    let web = [
        "10.1.0.11",
        "10.1.0.12",
        "10.2.0.11",
        "10.2.0.12",
        "10.3.0.11",
    ];
    eventually(
        Duration::from_secs(10),
        "demo answers web.shop.global",
        || async move {
            let m = poll(dns, &Ask::new("web.shop.global", RecordType::A)).await?;
            (addresses(&m) == sorted(&web)).then_some(())
        },
    )
    .await;
    let m = query(dns, &Ask::new("db-0.east-1.db.data.global", RecordType::A)).await;
    assert_eq!(addresses(&m), sorted(&["10.1.2.10"]));
    let m = query(dns, &Ask::new("api.shop.global", RecordType::A)).await;
    assert_eq!(addresses(&m), sorted(&["10.96.2.10", "10.96.3.10"]));
    let (status, body) = http_get(admin, "/readyz").await.unwrap();
    assert_eq!((status, body.trim()), (200, "ready"));
    // The files it prints are live: an edit shows up in answers.
    let east2 = dir.path().join("east-2.yaml");
    let text = std::fs::read_to_string(&east2)
        .unwrap()
        .replace("{ip: 10.2.0.12}", "{ip: 10.2.0.99}");
    std::fs::write(&east2, text).unwrap();
    let edited = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "demo follows its files",
        || async move {
            addresses(&query(dns, &Ask::new("east-2.web.shop.global", RecordType::A)).await)
                .contains(&"10.2.0.99".to_owned())
                .then_some(())
        },
    )
    .await;
    // README: "edit one and the answers follow within a second".
    assert!(
        edited.elapsed() < Duration::from_secs(1),
        "the edit showed after {:?}",
        edited.elapsed()
    );
    // dig, as the README shows it.
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &dns_port.to_string(),
            "+short",
            "web.shop.global",
        ])
        .output()
        .expect("dig");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    let printed = demo.printed.clone();
    let status = demo.proc.terminate();
    assert!(status.success(), "demo exits 0 on SIGTERM: {status}");
    let printed = printed.text();
    assert!(
        printed.contains(&format!("dig @127.0.0.1 -p {dns_port} web.shop.global")),
        "{printed}"
    );
}

/// Refused flags, one row each: program, arguments, and the words the
/// error must hold (the flag's name first).
#[rustfmt::skip]
const FLAG_ERRORS: &[(&str, &[&str], &[&str])] = &[
    ("meshdns", &["serve"], &["--insecure", "plaintext"]),
    ("meshdns", &["serve", "--insecure", "--ttl", "15"], &["--ttl", "no unit"]),
    ("meshdns", &["serve", "--insecure", "--domain", "a..b"], &["--domain"]),
    ("meshdns", &["serve", "--insecure", "--dns-listen", "nowhere"], &["--dns-listen"]),
    ("meshdns", &["serve", "--insecure", "--workers", "100000"], &["--workers", "maximum"]),
    ("meshdns", &["serve", "--insecure", "--udp-receive-buffer", "300000000"], &["--udp-receive-buffer", "maximum"]),
    ("meshdns", &["serve", "--insecure", "--control-plane-nice", "20"], &["--control-plane-nice", "0..=19"]),
    ("meshdns-syncer", &["--registry", "127.0.0.1:1", "--source", "file:/dev/null"], &["--registry", "--insecure"]),
    ("meshdns-syncer", &["--insecure", "--registry", "127.0.0.1:1", "--source", "ftp:x"], &["--source"]),
    ("meshdns-syncer", &["--insecure", "--registry", "127.0.0.1:1", "--heartbeat", "5"], &["--heartbeat"]),
];

/// Each is refused at start, before anything listens; `serve` rows get
/// port-0 listeners so that a wrongly accepted flag cannot take a fixed port.
#[test]
fn flag_errors_name_the_flag() {
    for (program, args, words) in FLAG_ERRORS {
        let mut args = args.to_vec();
        if args[0] == "serve" {
            args.extend_from_slice(&LOOPBACK_PORT_0);
        }
        let (code, text) = run(program, &args);
        assert_ne!(code, 0, "{program} {args:?}");
        assert!(
            words.iter().all(|w| text.contains(w)),
            "{program} {args:?}: {words:?} in {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syncer_process_killed_and_restarted() {
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("syncer-proc");
    let file = dir.write(
        "east-1.yaml",
        "cluster: east-1\nservices:\n  - {name: web, namespace: shop, ports: [{port: 80}], endpoints: [{ip: 10.1.0.1}, {ip: 10.1.0.2}]}\n",
    );
    let start = || Proc::file_syncer(&file, &server.grpc_url(), &[]);
    let dns = server.dns;
    let syncer = start();
    eventually(
        Duration::from_secs(10),
        "syncer process exports",
        || async move {
            (addresses(&query(dns, &Ask::new("web.shop.global", RecordType::A)).await).len() == 2)
                .then_some(())
        },
    )
    .await;
    // kill -9: no goodbye. The data stays, and a new process replaces it.
    syncer.signal("KILL");
    drop(syncer);
    dir.write(
        "east-1.yaml",
        "cluster: east-1\nservices:\n  - {name: web, namespace: shop, ports: [{port: 80}], endpoints: [{ip: 10.1.0.3}]}\n",
    );
    let m = query(dns, &Ask::new("web.shop.global", RecordType::A)).await;
    assert_eq!(addresses(&m), sorted(&["10.1.0.1", "10.1.0.2"]));
    let syncer = start();
    eventually(
        Duration::from_secs(10),
        "restarted syncer's snapshot",
        || async move {
            (addresses(&query(dns, &Ask::new("web.shop.global", RecordType::A)).await)
                == sorted(&["10.1.0.3"]))
            .then_some(())
        },
    )
    .await;
    assert!(syncer.terminate().success(), "syncer exits 0 on SIGTERM");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_process_stops_on_sigterm() {
    let mut served = meshdns_tests::ServeProc::start(&[]).await;
    let (admin, dns) = (served.admin, served.dns);
    eventually(Duration::from_secs(10), "readyz", || async move {
        matches!(http_get(admin, "/readyz").await, Ok((200, _))).then_some(())
    })
    .await;
    assert!(matches!(http_get(admin, "/healthz").await, Ok((200, _))));
    let m = eventually(Duration::from_secs(10), "SOA", || async move {
        poll(dns, &Ask::new("global", RecordType::SOA)).await
    })
    .await;
    assert_eq!(m.answers.len(), 1);
    served.proc.signal("TERM");
    let status = served
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
}

/// The flags `--help` lists, each with its environment variable if any
/// (`--ttl` -> `Some("MESHDNS_TTL")`), read whole: `--namespace` is not
/// `--namespace-selector`.
fn help_flags(help: &str) -> std::collections::BTreeMap<String, Option<String>> {
    let mut flags = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
            .filter(|w| !w.is_empty())
            .collect();
        // A flag's own line starts with it (`-h, --help`, `--ttl <TTL>`);
        // descriptions may name other flags.
        let defines = line.trim_start().starts_with('-');
        if let Some(flag) = words
            .iter()
            .find(|w| defines && w.starts_with("--") && w.len() > 2)
        {
            current = Some(flag.to_string());
            flags.entry(flag.to_string()).or_insert(None);
        }
        if let (Some(i), Some(flag)) = (words.iter().position(|w| *w == "env:"), &current)
            && let Some(var) = words.get(i + 1)
        {
            let var = var.split('=').next().unwrap_or_default().to_owned();
            flags.insert(flag.clone(), Some(var));
        }
    }
    flags
}

/// README: every flag of `meshdns serve` and `meshdns-syncer` can be set
/// as `MESHDNS_<FLAG>` (`--kubeconfig` reads the standard `KUBECONFIG`),
/// and the variable works where the flag would.
#[test]
fn every_flag_is_settable_from_the_environment() {
    for (program, args) in [
        ("meshdns", vec!["serve", "--help"]),
        ("meshdns-syncer", vec!["--help"]),
    ] {
        let (code, help) = run(program, &args);
        assert_eq!(code, 0);
        let flags = help_flags(&help);
        assert!(flags.len() > 15, "{program}: {flags:?}");
        for (flag, env) in &flags {
            if matches!(flag.as_str(), "--help" | "--version") {
                continue;
            }
            let want = if flag == "--kubeconfig" {
                "KUBECONFIG".to_owned()
            } else {
                format!("MESHDNS_{}", flag[2..].to_uppercase().replace('-', "_"))
            };
            assert_eq!(env.as_deref(), Some(want.as_str()), "{program} {flag}");
        }
    }
    // Set from the environment, refused naming the flag as it would be.
    let out = Command::new(bin("meshdns"))
        .args(["serve", "--insecure"])
        .env("MESHDNS_WORKERS", "100000")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("--workers") && text.contains("maximum"),
        "{text}"
    );
    let out = Command::new(bin("meshdns-syncer"))
        .args([
            "--insecure",
            "--registry",
            "http://127.0.0.1:9",
            "--cluster",
            "c",
        ])
        .env("MESHDNS_SELECTOR", "a=b=c")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("--selector: \"a=b=c\""), "{text}");
}

/// Every flag the manifests in deploy/ pass exists in the binary's --help,
/// and every MESHDNS_* variable they set names a real flag's environment.
/// Every manifest that passes flags or variables, and the command whose
/// `--help` must know them.
const SYNCER: &[&str] = &["--help"];
const SERVE: &[&str] = &["serve", "--help"];
#[rustfmt::skip]
const MANIFESTS: &[(&str, &str, &[&str])] = &[
    ("deploy/member/deployment.yaml", "meshdns-syncer", SYNCER),
    ("deploy/hub/statefulset.yaml", "meshdns", SERVE),
    ("deploy/hub/kustomization.yaml", "meshdns", SERVE),
    ("deploy/member/mcs/kustomization.yaml", "meshdns-syncer", SYNCER),
    ("deploy/member/namespace-selector/kustomization.yaml", "meshdns-syncer", SYNCER),
    ("deploy/helm/meshdns/templates/member/deployment.yaml", "meshdns-syncer", SYNCER),
    ("deploy/helm/meshdns/templates/hub/statefulset.yaml", "meshdns", SERVE),
    ("deploy/helm/meshdns/values.yaml", "meshdns", SERVE),
];

#[test]
fn manifest_flags_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, program, args) in MANIFESTS {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        // Comments may mention other programs' flags.
        let manifest: String = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let (code, help) = run(program, args);
        assert_eq!(code, 0);
        let known = help_flags(&help);
        let flags: Vec<&str> = manifest
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.split('=').next().unwrap())
            .collect();
        for flag in &flags {
            assert!(
                known.contains_key(*flag),
                "{file}: {flag} is not in {program} --help"
            );
        }
        let vars: Vec<&str> = manifest
            .split(|c: char| c.is_whitespace() || c == '=' || c == '-' || c == ':')
            .filter(|w| w.starts_with("MESHDNS_"))
            .collect();
        for var in &vars {
            assert!(
                known.values().any(|env| env.as_deref() == Some(*var)),
                "{file}: {var} is not a {program} variable"
            );
        }
        // A component may pass a single flag; none at all means the parse broke.
        assert!(
            !flags.is_empty() || !vars.is_empty(),
            "{file}: {flags:?} {vars:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_fleet() {
    let f = meshdns_tests::Fleet::start(&[]).await;
    let url = f.server.grpc_url();
    let status = |extra: &[&str]| {
        let mut args = vec!["status", "--insecure", "--registry", &url];
        args.extend_from_slice(extra);
        run("meshdns", &args)
    };
    let (code, table) = status(&[]);
    assert_eq!(code, 0, "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("CLUSTER")
            && lines[0].contains("HEARTBEAT")
            && lines[0].contains("VERSION"),
        "{table}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("east-1")
            && l.contains("us-east-1a")
            && l.contains("live")
            && l.contains("yes")),
        "{table}"
    );
    assert!(table.contains("3 clusters"), "{table}");
    let (code, service) = status(&["--service", "web.shop"]);
    assert_eq!(code, 0, "{service}");
    assert!(
        service
            .lines()
            .any(|l| l.starts_with("east-1") && l.contains("10.1.0.13") && l.contains("not ready")),
        "{service}"
    );
    assert!(
        service
            .lines()
            .any(|l| l.contains("fd00:3::11") && l.ends_with("ready")),
        "{service}"
    );
    let (code, json) = status(&["--output", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["clusters"].as_array().unwrap().len(), 3);
    // One service as JSON: the schema /debug/* uses (dns/src/json.rs),
    // the port's protocol included, with the cluster and its state.
    let (code, json) = status(&["--service", "web.shop", "--output", "json"]);
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["service"], "shop/web", "{json}");
    let east = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["cluster"] == "east-1")
        .unwrap_or_else(|| panic!("east-1 exports web.shop: {json}"));
    assert_eq!(east["cluster_state"], "live", "{json}");
    assert_eq!(east["namespace"], "shop", "{json}");
    assert_eq!(east["ports"][0]["protocol"], "TCP", "{json}");
    assert!(
        east["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|ep| ep["addresses"][0] == "10.1.0.13" && ep["ready"] == false),
        "{json}"
    );
    let (code, err) = status(&["--service", "web"]);
    assert_ne!(code, 0);
    assert!(err.contains("--service"), "{err}");
    f.stop().await;
}

/// `meshdns` turns transparent huge pages off for itself: with them a few
/// live objects keep whole 2 MiB pages resident (memory per endpoint,
/// benches/README.md "Fleet scale, sixth session"). Skipped where the
/// kernel does not report the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_without_transparent_huge_pages() {
    let mut args = vec!["serve", "--insecure"];
    args.extend_from_slice(&LOOPBACK_PORT_0);
    let (hub, logs) = Proc::start_logged("meshdns", &args);
    let status = format!("/proc/{}/status", hub.0.id());
    let thp = move || {
        std::fs::read_to_string(&status)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:").map(|v| v.trim().to_owned()))
    };
    if thp().is_none() {
        eprintln!("this kernel does not report THP_enabled; skipped");
        return;
    }
    // Set first thing in main: read until the process has got there.
    eventually(Duration::from_secs(10), "THP_enabled: 0", || {
        let value = thp();
        async move { (value.as_deref() == Some("0")).then_some(()) }
    })
    .await;
    // SIGTERM only once it is handled (installed before anything listens):
    // sent sooner, it ends the process with the signal, not with 0.
    logs.listening("grpc registry listening").await;
    assert!(hub.terminate().success(), "meshdns exits 0 on SIGTERM");
}

/// Each thread of process `pid`: its name and nice value, from
/// `/proc/<pid>/task/*/stat` (the name in parentheses, the nice value the
/// 17th field after them).
fn thread_nice_values(pid: u32) -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
        let name = stat[open + 1..close].to_owned();
        let nice = stat[close + 1..]
            .split_whitespace()
            .nth(16)
            .and_then(|f| f.parse().ok())
            .unwrap();
        threads.push((name, nice));
    }
    threads
}

/// `--control-plane-nice`: the registry writer, the reaper and the
/// blocking threads that validate a large Export run at the lower
/// priority; the DNS workers, the admin thread and the runtime's other
/// workers keep the process's own (0 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_lowers_only_the_control_planes_priority() {
    use meshdns_proto::fixtures;
    use meshdns_proto::wire::{self, export_request::Message as Req};
    use meshdns_tests::export_stream::{ExportStream, hello};

    let served = meshdns_tests::ServeProc::start(&["--control-plane-nice", "7"]).await;
    let pid = served.proc.0.id();
    let own = thread_nice_values(pid)
        .into_iter()
        .find(|(name, _)| name == "meshdns")
        .map(|(_, nice)| nice)
        .expect("the main thread");
    // A Snapshot too large to validate inline (over 1,024 items) goes to
    // the blocking pool.
    let endpoints: Vec<_> = (0..1_500)
        .map(|i| fixtures::wire_endpoint(format!("10.7.{}.{}", i / 200, i % 200 + 1)))
        .collect();
    let mut stream = ExportStream::open(served.grpc_url(), Req::Hello(hello("east")))
        .await
        .unwrap();
    let big = fixtures::wire_service("shop", "web", endpoints);
    let ack = stream
        .send(Req::Snapshot(wire::Snapshot {
            services: vec![big],
            more: false,
        }))
        .await
        .unwrap();
    assert!(ack.refusals.is_empty(), "{:?}", ack.refusals);
    let threads = thread_nice_values(pid);
    let nice_of = |name: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(n, _)| n.starts_with(name))
            .map(|(_, nice)| *nice)
            .collect()
    };
    assert_eq!(nice_of("meshdns-writer"), [7], "{threads:?}");
    assert_eq!(nice_of("meshdns-reaper"), [7], "{threads:?}");
    assert_eq!(nice_of("meshdns-admin"), [own], "{threads:?}");
    let udp = nice_of("meshdns-udp");
    assert!(
        !udp.is_empty() && udp.iter().all(|n| *n == own),
        "{threads:?}"
    );
    // The runtime's threads share one name: its workers stay, the blocking
    // thread that validated the Snapshot (kept alive 10 s) was lowered.
    let runtime = nice_of("tokio-");
    assert!(runtime.contains(&7), "{threads:?}");
    assert!(runtime.contains(&own), "{threads:?}");
    drop(stream);
    assert!(served.proc.terminate().success());
}
