//! The demo's virtual machines: cluster east-1's syncer also runs the VM
//! registration API and health checks, and two simulated VMs use them.
//!
//! - `cart-vm-1` (10.1.9.10) registers itself into `shop/cart` beside
//!   its pod, and heartbeats every 5s (TTL 15s): `dig cart.shop.global`.
//! - `checkout-vm-1` (10.1.9.20) registers `shop/checkout` with a TCP
//!   health check. Its port is a real listener on loopback (the syncer
//!   dials 127.0.0.1 for 10.1.9.20, `--health-check-dial`), which the demo
//!   closes for one `--vm-cycle` and reopens for the next:
//!   `dig checkout.shop.global` shows it leave and come back.
//!
//! Kept apart from the rest of the demo so it moves with it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use meshdns_syncer::health::{self, HealthConfig};
use meshdns_syncer::metrics::Metrics;
use meshdns_syncer::registration::body::TtlBounds;
use meshdns_syncer::registration::store::Limits;
use meshdns_syncer::registration::{self, RegistrationConfig};
use meshdns_syncer::source::Exports;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// The demo VMs' bearer token, written to the token file it prints.
pub const TOKEN: &str = "demo-vm-registrant-token";
const CART_VM: &str = "10.1.9.10";
const CHECKOUT_VM: [u8; 4] = [10, 1, 9, 20];
/// The demo VMs' range: the only addresses they may register.
const VM_RANGE: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 1, 9, 0), 24);

/// What the demo prints about its VMs.
#[derive(Debug)]
pub struct VmDemo {
    pub api: SocketAddr,
    pub token_file: PathBuf,
    pub checkout_port: u16,
}

fn config(what: &'static str) -> impl FnOnce(String) -> Error {
    move |problem| Error::Config {
        flag: what,
        problem,
    }
}

/// Wraps east-1's `exports` with registrations and health checks, and
/// starts the two VMs.
pub async fn start(
    exports: Exports,
    dir: &Path,
    listen: SocketAddr,
    cycle: Duration,
    shutdown: CancellationToken,
) -> Result<(Exports, VmDemo), Error> {
    let token_file = dir.join("registration-tokens");
    std::fs::write(
        &token_file,
        format!("# <token> <namespace>/<service>[,...]\n{TOKEN} shop/*\n"),
    )
    .map_err(|e| config("--dir")(e.to_string()))?;
    // The checkout VM's port: a real listener on loopback.
    let port_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| config("demo")(format!("cannot open the checkout VM's port: {e}")))?;
    let local = port_listener
        .local_addr()
        .map_err(|e| config("demo")(e.to_string()))?;
    let metrics = Arc::new(Metrics::new());
    let registrations = registration::start(
        RegistrationConfig {
            listen,
            token_file: token_file.clone(),
            state_file: Some(dir.join("registrations.json")),
            ttl: TtlBounds {
                min: Duration::from_secs(1),
                max: Duration::from_secs(3600),
            },
            limits: Limits {
                registrations: 100,
                per_service: 10,
                health_checks: 100,
                per_token: 100,
            },
            // The demo VMs' range (10.1.9.0/24) only.
            bounds: registration::bounds::Bounds {
                cidrs: vec![VM_RANGE.into()],
                max_endpoints: 10_000,
            },
            rate: 20,
            burst: 40,
            sweep_interval: Duration::from_secs(1),
        },
        metrics.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|e| config("--registration-listen")(e.to_string()))?;
    let api = registrations.listen;
    let merged = registration::merged(exports, &registrations, shutdown.clone());
    // IP:PORT: the registered VM's one port, not every port of loopback.
    let dial = health::Dial::from_iter([health::DialEntry::Socket(
        SocketAddr::new(IpAddr::from(CHECKOUT_VM), local.port()),
        local,
    )]);
    let (checked, _checker) = health::start(
        merged,
        Some(registrations.checks()),
        HealthConfig {
            max_checks: 100,
            concurrency: 8,
            dial,
        },
        metrics,
        registrations.store.checks_in_use.clone(),
        shutdown.clone(),
    );
    tokio::spawn(listen_in_cycles(port_listener, cycle, shutdown.clone()));
    let cart = serde_json::json!({
        "addresses": [CART_VM],
        "ports": [{"name": "http", "port": 8080}],
        "hostname": "cart-vm-1",
        "zone": "us-east-1a",
        "ttl_seconds": 15,
    });
    let checkout = serde_json::json!({
        "addresses": [IpAddr::from(CHECKOUT_VM).to_string()],
        "ports": [{"name": "http", "port": local.port()}],
        "hostname": "checkout-vm-1",
        "ttl_seconds": 15,
        "health_check": format!("tcp:{} interval=1s timeout=500ms rise=2 fall=2", local.port()),
    });
    tokio::spawn(vm_loop(api, "shop/cart/cart-vm-1", cart, shutdown.clone()));
    tokio::spawn(vm_loop(
        api,
        "shop/checkout/checkout-vm-1",
        checkout,
        shutdown,
    ));
    Ok((
        checked,
        VmDemo {
            api,
            token_file,
            checkout_port: local.port(),
        },
    ))
}

/// Accepts (and closes) connections for `cycle`, then stops listening for
/// `cycle`, and again.
async fn listen_in_cycles(listener: TcpListener, cycle: Duration, shutdown: CancellationToken) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let mut listener = Some(listener);
    loop {
        if let Some(open) = listener.take() {
            let until = tokio::time::sleep(cycle);
            tokio::pin!(until);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut until => break,
                    _ = open.accept() => {}
                }
            }
            println!("demo: checkout-vm-1 stops listening on {addr} (its health check will fail)");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(cycle) => {}
        }
        // Rebinding a just-closed port can take a moment.
        while listener.is_none() {
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(_) => tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                },
            }
        }
        println!("demo: checkout-vm-1 listens again on {addr}");
    }
}

/// One VM: registers, then heartbeats every 5s; registers again if its
/// registration lapsed (404).
async fn vm_loop(
    api: SocketAddr,
    instance: &'static str,
    body: serde_json::Value,
    shutdown: CancellationToken,
) {
    let path = format!("/v1/registrations/{instance}");
    let heartbeat = format!("{path}/heartbeat");
    let mut registered = false;
    loop {
        let status = if registered {
            put(api, &heartbeat, None).await
        } else {
            put(api, &path, Some(&body)).await
        };
        match status {
            Some(200 | 201) if !registered => {
                registered = true;
                println!("demo: {instance} registered through http://{api}{path}");
            }
            Some(200) => {}
            Some(404) => registered = false,
            other => tracing::warn!(instance, status = ?other, "demo VM registration failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(if registered { 5 } else { 1 })) => {}
        }
    }
}

/// `PUT path` with the demo token: the status code.
async fn put(api: SocketAddr, path: &str, body: Option<&serde_json::Value>) -> Option<u16> {
    let body = body.map(ToString::to_string).unwrap_or_default();
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = TcpStream::connect(api).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.ok()?;
        let text = String::from_utf8_lossy(&reply);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}
