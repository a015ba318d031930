//! VMs as members (issue 17): instances register through the syncer's
//! registration API, heartbeat or lapse, survive a syncer restart through
//! its state file, and health checks against real listeners take
//! endpoints out of answers and bring them back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use hickory_proto::rr::RecordType;
use meshdns_tests::demo::DemoProc;
use meshdns_tests::dns::{Ask, addresses, query, sorted};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{TestServer, TestSyncer, eventually, free_port, http_get};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

const CLUSTER: &str = r#"
cluster: east-1
region: us-east
zone: us-east-1a
services:
  - name: web
    namespace: shop
    ports: [{name: http, protocol: TCP, port: 8080}]
    endpoints:
      - {ip: 10.1.0.11}
"#;

const WEB_TOKEN: &str = "web-registrant-token-0001";
const OPS_TOKEN: &str = "ops-registrant-token-0002";
const TOKENS: &str = "# one registrant of shop/web, one operator of every shop service\n\
web-registrant-token-0001 shop/web\n\
ops-registrant-token-0002 shop/*\n";

const LIMIT: Duration = Duration::from_secs(20);

/// A hub and one file-source syncer with the registration API on.
struct Vms {
    server: TestServer,
    syncer: Option<TestSyncer>,
    api: SocketAddr,
    admin: SocketAddr,
    dir: TempDir,
    file: PathBuf,
    extra: Vec<String>,
}

impl Vms {
    async fn start(extra: &[&str]) -> Self {
        let server = TestServer::start(&[]).await;
        let dir = TempDir::new("vms");
        let file = dir.write("east-1.yaml", CLUSTER);
        dir.write("tokens", TOKENS);
        let mut vms = Vms {
            server,
            syncer: None,
            api: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            file,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        vms.start_syncer().await;
        let dns = vms.server.dns;
        eventually(LIMIT, "the file source's pod answered", || async move {
            (addresses(&query(dns, &Ask::new("web.shop.global", RecordType::A)).await)
                == sorted(&["10.1.0.11"]))
            .then_some(())
        })
        .await;
        vms
    }

    async fn start_syncer(&mut self) {
        let tokens = self.dir.path().join("tokens").display().to_string();
        let api = self.api.to_string();
        let admin = self.admin.to_string();
        let mut flags: Vec<&str> = vec![
            "--registration-listen",
            &api,
            "--registration-token-file",
            &tokens,
            "--registration-min-ttl",
            "1s",
            "--registration-cidrs",
            "10.9.0.0/24",
            "--registration-sweep-interval",
            "200ms",
            "--admin-listen",
            &admin,
        ];
        flags.extend(self.extra.iter().map(String::as_str));
        self.syncer = Some(TestSyncer::start(
            &self.file,
            &[self.server.grpc_url()],
            &flags,
        ));
        let api = self.api;
        eventually(LIMIT, "the registration API listening", || async move {
            let (status, _) = call(api, "GET", "/v1/registrations", Some(OPS_TOKEN), None).await;
            (status == 200).then_some(())
        })
        .await;
    }

    async fn stop_syncer(&mut self) {
        if let Some(s) = self.syncer.take() {
            s.stop().await;
        }
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        call(self.api, "PUT", path, Some(token), Some(body)).await
    }

    /// PUTs `body` and asserts it is refused with `code`, naming `field`;
    /// returns the error's message.
    async fn refused(
        &self,
        path: &str,
        token: &str,
        body: Value,
        code: u16,
        field: &str,
    ) -> String {
        let (got, err) = self.put(path, token, body).await;
        assert_eq!((got, err["field"].as_str()), (code, Some(field)), "{err}");
        err["error"].as_str().unwrap_or_default().to_owned()
    }

    async fn a(&self, name: &str) -> Vec<String> {
        addresses(&query(self.server.dns, &Ask::new(name, RecordType::A)).await)
    }

    /// Waits until `name` answers exactly `want`.
    async fn answers(&self, name: &str, want: &[&str]) {
        let dns = self.server.dns;
        let want = sorted(want);
        let what = format!("{name} answering {want:?}");
        eventually(LIMIT, &what, || {
            let want = want.clone();
            async move {
                (addresses(&query(dns, &Ask::new(name, RecordType::A)).await) == want).then_some(())
            }
        })
        .await;
    }

    async fn status(&self) -> Value {
        let (code, body) = http_get(self.admin, "/status").await.unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn stop(mut self) {
        self.stop_syncer().await;
        self.server.stop().await;
    }
}

/// One HTTP/1.1 request to the registration API: status and JSON body.
async fn call(
    api: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    call_from([127, 0, 0, 1], api, method, path, token, body).await
}

/// Like [`call`], from the local address `from` (another client to the
/// rate limit).
async fn call_from(
    from: [u8; 4],
    api: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let Ok(mut stream) = socket.connect(api).await else {
        return (0, Value::Null);
    };
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, Value::Null);
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply).await;
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let text = reply.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(text).unwrap_or(Value::Null))
}

fn registration(address: &str, ttl: u64) -> Value {
    json!({
        "addresses": [address],
        "ports": [{"name": "http", "port": 8080}],
        "hostname": "vm-1",
        "zone": "us-east-1a",
        "ttl_seconds": ttl,
    })
}

#[tokio::test]
async fn a_registered_vm_answers_beside_pods_until_deregistered() {
    let vms = Vms::start(&[]).await;
    let path = "/v1/registrations/shop/web/vm-1";
    let (code, body) = vms.put(path, WEB_TOKEN, registration("10.9.0.5", 60)).await;
    assert_eq!(code, 201, "{body}");
    vms.answers("web.shop.global", &["10.1.0.11", "10.9.0.5"])
        .await;
    // The hostname answers too (a headless-style name under the cluster).
    // Re-registering is idempotent: 200, same answer.
    let (code, body) = vms.put(path, WEB_TOKEN, registration("10.9.0.5", 60)).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = vms
        .put(&format!("{path}/heartbeat"), WEB_TOKEN, json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(body["expires_unix_ms"].as_u64().unwrap() > 0, "{body}");
    // A service only registrations export.
    let (code, body) = vms
        .put(
            "/v1/registrations/shop/billing/vm-2",
            OPS_TOKEN,
            registration("10.9.0.6", 60),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    vms.answers("billing.shop.global", &["10.9.0.6"]).await;
    let (code, list) = call(vms.api, "GET", "/v1/registrations", Some(OPS_TOKEN), None).await;
    assert_eq!(code, 200);
    assert_eq!(list["registrations"].as_array().unwrap().len(), 2, "{list}");
    // The web token sees only its own service.
    let (_, list) = call(vms.api, "GET", "/v1/registrations", Some(WEB_TOKEN), None).await;
    assert_eq!(list["registrations"].as_array().unwrap().len(), 1, "{list}");
    // Deregister: gone at once (no TTL wait).
    let (code, _) = call(vms.api, "DELETE", path, Some(WEB_TOKEN), None).await;
    assert_eq!(code, 204);
    vms.answers("web.shop.global", &["10.1.0.11"]).await;
    let (code, body) = call(vms.api, "DELETE", path, Some(WEB_TOKEN), None).await;
    assert_eq!((code, body["error"].is_string()), (404, true), "{body}");
    // Every refusal is JSON, even of a method or path the API lacks.
    let (code, body) = call(vms.api, "POST", path, Some(WEB_TOKEN), None).await;
    assert_eq!((code, body["error"].is_string()), (405, true), "{body}");
    let (code, body) = call(vms.api, "GET", "/v2/nothing", Some(WEB_TOKEN), None).await;
    assert_eq!((code, body["error"].is_string()), (404, true), "{body}");
    let status = vms.status().await;
    assert_eq!(
        status["vms"]["registrations"]["registrations"], 1,
        "{status}"
    );
    vms.stop().await;
}

#[tokio::test]
async fn a_lapsed_heartbeat_withdraws_the_instance() {
    let vms = Vms::start(&[]).await;
    let path = "/v1/registrations/shop/web/vm-1";
    let (code, body) = vms.put(path, WEB_TOKEN, registration("10.9.0.5", 2)).await;
    assert_eq!(code, 201, "{body}");
    vms.answers("web.shop.global", &["10.1.0.11", "10.9.0.5"])
        .await;
    // Heartbeats keep it past its TTL...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (code, _) = vms
            .put(&format!("{path}/heartbeat"), WEB_TOKEN, json!({}))
            .await;
        assert_eq!(code, 200);
    }
    assert_eq!(
        vms.a("web.shop.global").await,
        sorted(&["10.1.0.11", "10.9.0.5"])
    );
    // ...and without them it leaves within TTL + one sweep interval
    // (2s + 200ms; the deadline here is generous for a busy machine).
    let stopped = std::time::Instant::now();
    vms.answers("web.shop.global", &["10.1.0.11"]).await;
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "not withdrawn before its TTL: {:?}",
        stopped.elapsed()
    );
    // Upper bound: TTL (2s) + sweep (200ms) + the hub's propagation, with
    // generous slack for a busy machine — far under the 20s wait above.
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "withdrawn within TTL + sweep interval (+ slack): {:?}",
        stopped.elapsed()
    );
    let (code, _) = vms
        .put(&format!("{path}/heartbeat"), WEB_TOKEN, json!({}))
        .await;
    assert_eq!(code, 404, "a lapsed registration must register again");
    let (_, metrics) = http_get(vms.admin, "/metrics").await.unwrap();
    assert!(
        metrics.contains("meshdns_syncer_registration_heartbeats_lapsed_total 1"),
        "{metrics}"
    );
    vms.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_and_change_nothing() {
    let vms = Vms::start(&[]).await;
    let body = registration("10.9.0.5", 60);
    let path = "/v1/registrations/shop/web/vm-1";
    let (code, err) = call(vms.api, "PUT", path, None, Some(body.clone())).await;
    assert_eq!(code, 401, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("bearer token"),
        "{err}"
    );
    let (code, _) = vms.put(path, "not-a-real-token-at-all", body.clone()).await;
    assert_eq!(code, 401);
    // A token scoped to shop/web cannot register shop/db.
    let (code, err) = vms
        .put("/v1/registrations/shop/db/vm-1", WEB_TOKEN, body.clone())
        .await;
    assert_eq!(code, 403, "{err}");
    assert!(err["error"].as_str().unwrap().contains("shop/db"), "{err}");
    let (code, _) = call(vms.api, "GET", "/v1/registrations", Some("x"), None).await;
    assert_eq!(code, 401);
    // Nothing registered: the list is empty and the answers unchanged.
    let (_, list) = call(vms.api, "GET", "/v1/registrations", Some(OPS_TOKEN), None).await;
    assert_eq!(list["registrations"], json!([]), "{list}");
    assert_eq!(vms.a("web.shop.global").await, sorted(&["10.1.0.11"]));
    // A token added to the file works once the file is re-read.
    let mut tokens = TOKENS.to_owned();
    tokens.push_str("db-registrant-token-0003 shop/db\n");
    vms.dir.write("tokens", &tokens);
    let api = vms.api;
    let body2 = body.clone();
    eventually(LIMIT, "the new token accepted", || {
        let body = body2.clone();
        async move {
            let (code, _) = call(
                api,
                "PUT",
                "/v1/registrations/shop/db/vm-1",
                Some("db-registrant-token-0003"),
                Some(body),
            )
            .await;
            (code == 201).then_some(())
        }
    })
    .await;
    vms.answers("db.shop.global", &["10.9.0.5"]).await;
    vms.stop().await;
}

#[tokio::test]
async fn invalid_registrations_name_the_field() {
    let vms = Vms::start(&[]).await;
    let path = "/v1/registrations/shop/web/vm-1";
    let good = registration("10.9.0.5", 60);
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    let cases = [
        (
            path,
            with("addresses", json!(["127.0.0.1"])),
            400,
            "addresses[0]",
        ),
        (
            path,
            with("addresses", json!(["10.9.0.5", "169.254.169.254"])),
            400,
            "addresses[1]",
        ),
        (
            path,
            with("addresses", json!(["224.0.0.1"])),
            400,
            "addresses[0]",
        ),
        (
            path,
            with("addresses", json!(["0.0.0.0"])),
            400,
            "addresses[0]",
        ),
        (
            path,
            with("addresses", json!(["not-an-ip"])),
            400,
            "addresses[0]",
        ),
        (
            path,
            with("addresses", json!(vec!["10.9.0.9"; 17])),
            413,
            "addresses",
        ),
        (
            path,
            with("ports", json!([{"port": 0}])),
            400,
            "ports[0].port",
        ),
        (
            path,
            with("ports", json!([{"port": 70000}])),
            400,
            "ports[0].port",
        ),
        (
            path,
            with("ports", json!([{"name": "Web", "port": 80}])),
            400,
            "ports[0].name",
        ),
        (path, with("hostname", json!("vm_1")), 400, "hostname"),
        (path, with("ttl_seconds", json!(0)), 400, "ttl_seconds"),
        (
            path,
            with("health_check", json!("tcp:9999")),
            400,
            "health_check.port",
        ),
        (
            path,
            with("health_check", json!("tcp:8080 host=10.0.0.1")),
            400,
            "health_check.host",
        ),
        (
            path,
            with("health_check", json!("tcp:8080 rise=0")),
            400,
            "health_check.rise",
        ),
        (path, with("surprise", json!(1)), 400, "body"),
        (
            "/v1/registrations/shop/web/VM_1",
            good.clone(),
            400,
            "instance",
        ),
        (
            "/v1/registrations/shop/We.b/vm-1",
            good.clone(),
            400,
            "service",
        ),
        ("/v1/registrations/pay/web/vm-1", good.clone(), 403, ""),
    ];
    for (path, body, want_code, want_field) in cases {
        let (code, err) = vms.put(path, OPS_TOKEN, body.clone()).await;
        assert_eq!(code, want_code, "{body} -> {err}");
        assert!(err["error"].is_string(), "{err}");
        if !want_field.is_empty() {
            assert_eq!(err["field"], want_field, "{body} -> {err}");
        }
    }
    // Nothing of it was registered.
    let (_, list) = call(vms.api, "GET", "/v1/registrations", Some(OPS_TOKEN), None).await;
    assert_eq!(list["registrations"], json!([]), "{list}");
    // An instance may not take another's address in the same service.
    let (code, _) = vms.put(path, WEB_TOKEN, good.clone()).await;
    assert_eq!(code, 201);
    let mut other = good.clone();
    other["hostname"] = json!("vm-2");
    vms.refused(
        "/v1/registrations/shop/web/vm-2",
        WEB_TOKEN,
        other,
        409,
        "addresses[0]",
    )
    .await;
    vms.stop().await;
}

#[tokio::test]
async fn a_syncer_restart_keeps_live_registrations_and_expires_dead_ones() {
    let dir = TempDir::new("vms-state");
    let state = dir.path().join("registrations.json").display().to_string();
    let mut vms = Vms::start(&["--registration-state-file", &state]).await;
    let (code, _) = vms
        .put(
            "/v1/registrations/shop/web/vm-1",
            WEB_TOKEN,
            registration("10.9.0.5", 60),
        )
        .await;
    assert_eq!(code, 201);
    let mut short = registration("10.9.0.6", 2);
    short["hostname"] = json!("vm-2");
    let (code, _) = vms
        .put("/v1/registrations/shop/web/vm-2", WEB_TOKEN, short)
        .await;
    assert_eq!(code, 201);
    vms.answers("web.shop.global", &["10.1.0.11", "10.9.0.5", "10.9.0.6"])
        .await;
    vms.stop_syncer().await;
    let saved: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("registrations.json")).unwrap())
            .unwrap();
    assert_eq!(
        saved["registrations"].as_array().unwrap().len(),
        2,
        "{saved}"
    );
    // vm-2's TTL lapses while the syncer is down.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    vms.start_syncer().await;
    // From its first answers on, the restarted syncer exports vm-1: it is
    // never withdrawn (the hub serves the cluster's last state meanwhile).
    for _ in 0..20 {
        let now = vms.a("web.shop.global").await;
        assert!(
            now.contains(&"10.9.0.5".to_owned()),
            "vm-1 withdrawn: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, list) = call(vms.api, "GET", "/v1/registrations", Some(OPS_TOKEN), None).await;
    let names: Vec<&str> = list["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["instance"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vm-1"], "{list}");
    vms.answers("web.shop.global", &["10.1.0.11", "10.9.0.5"])
        .await;
    // And vm-1 still heartbeats against its restored registration.
    let (code, _) = vms
        .put(
            "/v1/registrations/shop/web/vm-1/heartbeat",
            WEB_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(code, 200);
    vms.stop().await;
}

/// A TCP listener on loopback standing in for a VM's port, which the test
/// closes and reopens; counts the connections it accepts.
struct Port {
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Port {
    async fn open(
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        reply: Option<Arc<HttpReply>>,
    ) -> Self {
        let mut listener = None;
        for _ in 0..50 {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = listener.expect("rebind the check port");
        let addr = listener.local_addr().unwrap();
        let counter = accepted;
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                if let Some(reply) = &reply {
                    let status = reply.next();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let _ = stream.read(&mut buf).await;
                        let text = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = stream.write_all(text.as_bytes()).await;
                    });
                }
            }
        });
        Port {
            addr,
            task: Some(task),
        }
    }

    fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What the stand-in HTTP server answers: `alternate` flips 200 and 503
/// on every request; else `status`.
struct HttpReply {
    alternate: AtomicBool,
    healthy: AtomicBool,
    count: AtomicUsize,
}

impl HttpReply {
    fn next(&self) -> u16 {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        let healthy = if self.alternate.load(Ordering::SeqCst) {
            n.is_multiple_of(2)
        } else {
            self.healthy.load(Ordering::SeqCst)
        };
        if healthy { 200 } else { 503 }
    }
}

fn checked(address: &str, port: u16, check: &str) -> Value {
    json!({
        "addresses": [address],
        "ports": [{"name": "http", "port": port}],
        "ttl_seconds": 600,
        "health_check": check,
    })
}

/// The syncer, dialling VM `address`'s port `port` at that port on
/// loopback (the VM's address is not routable here).
async fn dialing(address: &str, port: u16) -> Vms {
    let dial = format!("{address}:{port}=127.0.0.1:{port}");
    Vms::start(&["--health-check-dial", &dial]).await
}

/// Registers `vm-1` of `api.shop` at `address` with `check`, and waits
/// until `api.shop.global` answers with it.
async fn register_api_vm(vms: &Vms, address: &str, port: u16, check: &str) {
    let (code, body) = vms
        .put(
            "/v1/registrations/shop/api/vm-1",
            OPS_TOKEN,
            checked(address, port, check),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    vms.answers("api.shop.global", &[address]).await;
}

fn target<'a>(status: &'a Value, service: &str) -> Option<&'a Value> {
    status["vms"]["health_checks"]["targets"]
        .as_array()?
        .iter()
        .find(|t| t["service"] == service)
}

async fn service_report(vms: &Vms, service: &str) -> String {
    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        status: meshdns::status::StatusArgs,
    }
    let url = vms.server.grpc_url();
    let cmd = Cmd::try_parse_from([
        "status",
        "--insecure",
        "--registry",
        &url,
        "--service",
        service,
    ])
    .unwrap();
    meshdns::status::run(&cmd.status).await.unwrap()
}

#[tokio::test]
async fn tcp_checks_take_an_endpoint_out_and_bring_it_back() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut port = Port::open("127.0.0.1:0".parse().unwrap(), accepted.clone(), None).await;
    let number = port.addr.port();
    let vms = dialing("10.9.0.7", number).await;
    let check = format!("tcp:{number} interval=1s timeout=500ms rise=2 fall=3");
    register_api_vm(&vms, "10.9.0.7", number, &check).await;
    // Checks pass: the verdict reads passing in the syncer's /status.
    eventually(LIMIT, "a passing check", || async {
        let status = vms.status().await;
        (target(&status, "shop/api")?["health"] == "passing").then_some(())
    })
    .await;
    // The VM stops listening: still in after `fall - 1` failures...
    port.close();
    eventually(LIMIT, "fall - 1 = 2 failures, still in answers", || async {
        let status = vms.status().await;
        let t = target(&status, "shop/api")?;
        (t["failures"] == 2).then_some(t["in_answers"].clone())
    })
    .await
    .as_bool()
    .filter(|up| *up)
    .expect("fall=3: two failures leave the endpoint in answers");
    // ...and out of answers after `fall` failures...
    vms.answers("api.shop.global", &[]).await;
    let status = vms.status().await;
    let t = target(&status, "shop/api").unwrap();
    assert!(t["failures"].as_u64().unwrap() >= 3, "fall=3 honoured: {t}");
    assert_eq!(t["health"], "failing: connection refused", "{t}");
    assert_eq!(t["dialled"], format!("127.0.0.1:{number}"), "{t}");
    // ...and `meshdns status --service` says why.
    let report = service_report(&vms, "api.shop").await;
    assert!(
        report.lines().any(|l| l.contains("10.9.0.7")
            && l.contains("not ready (health check failing: connection refused)")),
        "{report}"
    );
    // /debug/answer names it too.
    let (_, debug) = http_get(vms.server.admin, "/debug/answer?name=api.shop.global")
        .await
        .unwrap();
    let debug: Value = serde_json::from_str(&debug).unwrap();
    assert_eq!(
        debug["out_by_health_check"][0]["addresses"],
        json!(["10.9.0.7"]),
        "{debug}"
    );
    // It listens again: back after `rise` passes.
    let _port = Port::open(port.addr, accepted.clone(), None).await;
    vms.answers("api.shop.global", &["10.9.0.7"]).await;
    let status = vms.status().await;
    assert_eq!(target(&status, "shop/api").unwrap()["flaps"], 2, "{status}");
    let (_, metrics) = http_get(vms.admin, "/metrics").await.unwrap();
    assert!(
        metrics.contains("meshdns_syncer_health_check_flaps_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshdns_syncer_health_checks_total{result=\"failed\"}"),
        "{metrics}"
    );
    vms.stop().await;
}

#[tokio::test]
async fn http_checks_want_their_status_and_damp_flapping() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let reply = Arc::new(HttpReply {
        alternate: AtomicBool::new(true),
        healthy: AtomicBool::new(true),
        count: AtomicUsize::new(0),
    });
    let port = Port::open(
        "127.0.0.1:0".parse().unwrap(),
        accepted.clone(),
        Some(reply.clone()),
    )
    .await;
    let number = port.addr.port();
    let vms = dialing("10.9.0.8", number).await;
    let check = format!("http:{number}/healthz status=200 interval=1s timeout=500ms rise=2 fall=2");
    register_api_vm(&vms, "10.9.0.8", number, &check).await;
    // Alternating 200/503: never two failures in a row, so never out.
    eventually(LIMIT, "six alternating checks", || async {
        let status = vms.status().await;
        (target(&status, "shop/api")?["checks"].as_u64()? >= 6).then_some(())
    })
    .await;
    let status = vms.status().await;
    let t = target(&status, "shop/api").unwrap();
    assert_eq!(t["flaps"], 0, "flapping damped: {t}");
    assert!(t["failures"].as_u64().unwrap() >= 2, "{t}");
    assert_eq!(vms.a("api.shop.global").await, sorted(&["10.9.0.8"]));
    // Steady 503: out, with the reason.
    reply.healthy.store(false, Ordering::SeqCst);
    reply.alternate.store(false, Ordering::SeqCst);
    vms.answers("api.shop.global", &[]).await;
    let report = service_report(&vms, "api.shop").await;
    assert!(
        report.contains("failing: unexpected http status"),
        "{report}"
    );
    let status = vms.status().await;
    let t = target(&status, "shop/api").unwrap();
    assert!(
        t["last_failure"].as_str().unwrap().contains("status 503"),
        "{t}"
    );
    // Healthy again: back.
    reply.healthy.store(true, Ordering::SeqCst);
    vms.answers("api.shop.global", &["10.9.0.8"]).await;
    drop(port);
    vms.stop().await;
}

#[tokio::test]
async fn checks_reach_only_exported_endpoints() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let port = Port::open("127.0.0.1:0".parse().unwrap(), accepted.clone(), None).await;
    let number = port.addr.port();
    let vms = dialing("10.9.0.9", number).await;
    // No way to name a host: a check is a port of the service's own.
    let bad = checked("10.9.0.9", number, &format!("tcp:{number} host=127.0.0.1"));
    vms.refused(
        "/v1/registrations/shop/api/vm-1",
        OPS_TOKEN,
        bad,
        400,
        "health_check.host",
    )
    .await;
    let other_port = checked(
        "10.9.0.9",
        number,
        &format!("tcp:{}", number.wrapping_add(1).max(1)),
    );
    vms.refused(
        "/v1/registrations/shop/api/vm-1",
        OPS_TOKEN,
        other_port,
        400,
        "health_check.port",
    )
    .await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "no check ran for refused registrations"
    );
    let check = format!("tcp:{number} interval=1s timeout=500ms");
    register_api_vm(&vms, "10.9.0.9", number, &check).await;
    eventually(LIMIT, "checks reaching the exported endpoint", || async {
        (accepted.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    // Withdrawn: its checks stop with it.
    let (code, _) = call(
        vms.api,
        "DELETE",
        "/v1/registrations/shop/api/vm-1",
        Some(OPS_TOKEN),
        None,
    )
    .await;
    assert_eq!(code, 204);
    vms.answers("api.shop.global", &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        after,
        "no check of an endpoint no longer exported"
    );
    let status = vms.status().await;
    assert_eq!(status["vms"]["health_checks"]["checked"], 0, "{status}");
    drop(port);
    vms.stop().await;
}

#[tokio::test]
async fn a_flood_of_bad_requests_does_not_starve_good_clients() {
    let vms = Vms::start(&["--registration-rate-limit", "5"]).await;
    let api = vms.api;
    // 127.0.0.1 floods with bad tokens...
    let flood = tokio::spawn(async move {
        let mut limited = 0;
        for _ in 0..300 {
            let (code, _) = call(
                api,
                "PUT",
                "/v1/registrations/shop/web/vm-x",
                Some("bad-token-bad-token"),
                Some(json!({})),
            )
            .await;
            if code == 429 {
                limited += 1;
            }
        }
        limited
    });
    // ...while 127.0.0.3 registers and heartbeats.
    for i in 0..5 {
        let (code, body) = call_from(
            [127, 0, 0, 3],
            api,
            "PUT",
            "/v1/registrations/shop/web/vm-1",
            Some(WEB_TOKEN),
            Some(registration("10.9.0.5", 60)),
        )
        .await;
        assert_eq!(code, if i == 0 { 201 } else { 200 }, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let limited = flood.await.unwrap();
    assert!(
        limited >= 250,
        "the flood is rate limited: {limited} of 300 refused"
    );
    vms.answers("web.shop.global", &["10.1.0.11", "10.9.0.5"])
        .await;
    let (_, metrics) = http_get(vms.admin, "/metrics").await.unwrap();
    assert!(
        metrics.contains("meshdns_syncer_registration_rate_limited_total"),
        "{metrics}"
    );
    vms.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_vms_register_and_the_checked_one_leaves_and_comes_back() {
    let dir = TempDir::new("demo-vms");
    let demo = DemoProc::start(
        dir.path(),
        &["--registration-listen", "127.0.0.1:0", "--vm-cycle", "3s"],
    )
    .await;
    let dns = demo.dns;
    let a = |name: &'static str| async move {
        addresses(&query(dns, &Ask::new(name, RecordType::A)).await)
    };
    // The cart VM registered itself beside its pod.
    eventually(LIMIT, "cart-vm-1 beside the cart pod", || async {
        let cart = a("cart.shop.global").await;
        (cart.contains(&"10.1.1.21".to_owned()) && cart.contains(&"10.1.9.10".to_owned()))
            .then_some(())
    })
    .await;
    // The checkout VM answers while it listens, leaves when it stops, and
    // comes back.
    for want in [&["10.1.9.20"][..], &[], &["10.1.9.20"]] {
        let what = format!("checkout.shop.global answering {want:?}");
        eventually(Duration::from_secs(30), &what, || async {
            (a("checkout.shop.global").await == sorted(want)).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn the_file_sources_health_check_applies_to_pods() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut port = Port::open("127.0.0.1:0".parse().unwrap(), accepted.clone(), None).await;
    let number = port.addr.port();
    let vms = Vms::start(&["--health-check-dial", "10.1.0.50=127.0.0.1"]).await;
    // The file gains a service with a health check on its named port.
    let checked = format!(
        "{CLUSTER}  - name: checked\n    namespace: shop\n    ports: [{{name: http, protocol: TCP, port: {number}}}]\n    \
         healthCheck: 'tcp:http interval=200ms timeout=150ms rise=1 fall=2'\n    endpoints:\n      - {{ip: 10.1.0.50}}\n"
    );
    vms.dir.write("east-1.yaml", &checked);
    vms.answers("checked.shop.global", &["10.1.0.50"]).await;
    eventually(LIMIT, "checks of the pod", || async {
        (accepted.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    port.close();
    vms.answers("checked.shop.global", &[]).await;
    let report = service_report(&vms, "checked.shop").await;
    assert!(
        report.contains("health check failing: connection refused"),
        "{report}"
    );
    let _port = Port::open(port.addr, accepted.clone(), None).await;
    vms.answers("checked.shop.global", &["10.1.0.50"]).await;
    vms.stop().await;
}

/// Finding 1: a registrant's failing check on the port of a service's
/// pods takes out its own endpoint only, never the pods.
#[tokio::test]
async fn a_registrants_check_never_takes_out_the_sources_pods() {
    // Both the VM's and the pod's port 8080 are dialled at closed loopback
    // ports: a check of either fails (refused).
    let closed = format!(
        "10.9.0.6:8080=127.0.0.1:{},10.1.0.11:8080=127.0.0.1:{}",
        free_port(),
        free_port()
    );
    let vms = Vms::start(&["--health-check-dial", &closed]).await;
    let body = json!({
        "addresses": ["10.9.0.6"],
        "ports": [{"name": "http", "port": 8080}],
        "ttl_seconds": 600,
        "health_check": "tcp:8080 interval=1s timeout=200ms rise=1 fall=1",
    });
    let (code, body) = vms
        .put("/v1/registrations/shop/web/vm-1", WEB_TOKEN, body)
        .await;
    assert_eq!(code, 201, "{body}");
    eventually(LIMIT, "the registrant's target failing", || async {
        let status = vms.status().await;
        (target(&status, "shop/web")?["health"]
            .as_str()?
            .starts_with("failing"))
        .then_some(())
    })
    .await;
    vms.answers("web.shop.global", &["10.1.0.11"]).await;
    // Only the registered endpoint is a target; the pod stays answered.
    let status = vms.status().await;
    let targets = status["vms"]["health_checks"]["targets"]
        .as_array()
        .unwrap();
    assert_eq!(targets.len(), 1, "{status}");
    assert_eq!(targets[0]["target"], "10.9.0.6:8080", "{status}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(vms.a("web.shop.global").await, sorted(&["10.1.0.11"]));
    vms.stop().await;
}

/// Findings 2 and 3: addresses outside --registration-cidrs are refused,
/// and a registration that would push the service over the hub's bounds
/// is refused at PUT (the pods keep answering).
#[tokio::test]
async fn registrations_stay_inside_the_hubs_bounds() {
    let vms = Vms::start(&["--registration-max-endpoints-per-service", "2"]).await;
    for outside in [
        "10.10.0.1",
        "168.63.129.16",
        "100.100.100.200",
        "fd00:ec2::254",
    ] {
        let err = vms
            .refused(
                "/v1/registrations/shop/web/vm-1",
                WEB_TOKEN,
                registration(outside, 60),
                400,
                "addresses[0]",
            )
            .await;
        assert!(err.contains("--registration-cidrs"), "{outside}: {err}");
    }
    // The pod plus one VM is the limit of 2; a second VM is refused.
    let (code, body) = vms
        .put(
            "/v1/registrations/shop/web/vm-1",
            WEB_TOKEN,
            registration("10.9.0.5", 60),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let mut second = registration("10.9.0.6", 60);
    second["hostname"] = json!("vm-2");
    let err = vms
        .refused(
            "/v1/registrations/shop/web/vm-2",
            WEB_TOKEN,
            second,
            413,
            "instance",
        )
        .await;
    assert!(
        err.contains("--registration-max-endpoints-per-service"),
        "{err}"
    );
    vms.answers("web.shop.global", &["10.1.0.11", "10.9.0.5"])
        .await;
    vms.stop().await;
}

/// Finding 5: a client holding many idle connections spends its own share
/// (16), not the listener's: the excess is closed at once, the idle ones
/// within the idle timeout, and another client registers meanwhile.
#[tokio::test]
async fn idle_connections_do_not_stop_a_good_client() {
    let vms = Vms::start(&[]).await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        if let Ok(stream) = socket.connect(vms.api).await {
            idle.push(stream);
        }
    }
    // A half-sent header on one of them.
    let _ = idle[0]
        .write_all(b"PUT /v1/registrations/shop/web/vm-1 HTTP/1.1\r\n")
        .await;
    let (code, body) = call_from(
        [127, 0, 0, 3],
        vms.api,
        "PUT",
        "/v1/registrations/shop/web/vm-1",
        Some(WEB_TOKEN),
        Some(registration("10.9.0.5", 60)),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    // The server closes what is over the per-client cap at once, and the
    // rest once they idle past the timeout.
    let mut over = 0;
    for stream in idle.iter_mut().skip(50) {
        if closed(stream).await {
            over += 1;
        }
    }
    assert_eq!(over, 50, "connections over the per-client cap closed");
    assert!(closed(&mut idle[0]).await, "a trickling connection closed");
    vms.answers("web.shop.global", &["10.1.0.11", "10.9.0.5"])
        .await;
    vms.stop().await;
}

/// True when the server closes `stream` (EOF or reset) within 20s.
async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Finding 9: a corrupt state file is moved aside and the syncer starts
/// empty (and serves) instead of refusing to start.
#[tokio::test]
async fn a_corrupt_state_file_does_not_stop_the_syncer() {
    let dir = TempDir::new("vms-corrupt");
    let state = dir.write(
        "registrations.json",
        "{\"version\": 99, \"registrations\": [",
    );
    let state_flag = state.display().to_string();
    let vms = Vms::start(&["--registration-state-file", &state_flag]).await;
    let (code, body) = vms
        .put(
            "/v1/registrations/shop/web/vm-1",
            WEB_TOKEN,
            registration("10.9.0.5", 60),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    vms.answers("web.shop.global", &["10.1.0.11", "10.9.0.5"])
        .await;
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains("unreadable"));
    assert!(aside, "the unreadable file kept aside for the operator");
    vms.stop().await;
}

/// Findings 7 and 10: a bad token (401) or another token in scope (403)
/// cannot heartbeat, re-register or delete an existing registration.
#[tokio::test]
async fn only_the_registering_token_changes_an_instance() {
    let vms = Vms::start(&[]).await;
    let path = "/v1/registrations/shop/web/vm-1";
    let (code, body) = vms.put(path, WEB_TOKEN, registration("10.9.0.5", 60)).await;
    assert_eq!(code, 201, "{body}");
    let heartbeat = format!("{path}/heartbeat");
    for (token, want) in [("bad-token-bad-token", 401), (OPS_TOKEN, 403)] {
        let (code, _) = call(vms.api, "PUT", &heartbeat, Some(token), None).await;
        assert_eq!(code, want, "heartbeat with {token}");
        let (code, _) = call(vms.api, "DELETE", path, Some(token), None).await;
        assert_eq!(code, want, "delete with {token}");
        let (code, _) = vms.put(path, token, registration("10.9.0.6", 60)).await;
        assert_eq!(code, want, "re-register with {token}");
    }
    vms.answers("web.shop.global", &["10.1.0.11", "10.9.0.5"])
        .await;
    let (code, _) = call(vms.api, "PUT", &heartbeat, Some(WEB_TOKEN), None).await;
    assert_eq!(code, 200);
    let (code, _) = call(vms.api, "DELETE", path, Some(WEB_TOKEN), None).await;
    assert_eq!(code, 204);
    vms.answers("web.shop.global", &["10.1.0.11"]).await;
    vms.stop().await;
}
