//! `meshdns demo`: a registry and DNS server with three simulated clusters,
//! all on loopback. The clusters' export files are compiled in from
//! `deploy/examples/` and written to a directory at start, so the demo
//! works from anywhere and a user can edit them to watch answers change.
//! Each cluster is a real file-source syncer streaming over gRPC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use meshdns_proto::backoff::Backoff;
use meshdns_syncer::publish::{self, PublishConfig};
use meshdns_syncer::source::{Overrides, file};
use tokio_util::sync::CancellationToken;

mod vms;

use crate::Listeners;
use crate::config::ServeArgs;
use crate::error::Error;

/// The demo fleet: (file name, contents).
pub const CLUSTERS: [(&str, &str); 3] = [
    (
        "east-1.yaml",
        include_str!("../../deploy/examples/east-1.yaml"),
    ),
    (
        "east-2.yaml",
        include_str!("../../deploy/examples/east-2.yaml"),
    ),
    (
        "west-1.yaml",
        include_str!("../../deploy/examples/west-1.yaml"),
    ),
];

/// `meshdns demo` flags.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Directory to write the demo clusters' export files to (default: a new temporary one).
    #[arg(long, env = "MESHDNS_DEMO_DIR")]
    pub dir: Option<PathBuf>,
    /// Address for DNS over UDP and TCP.
    #[arg(long = "dns-listen", default_value = "127.0.0.1:5353")]
    pub dns_listen: SocketAddr,
    /// Address for the gRPC registry.
    #[arg(long = "grpc-listen", default_value = "127.0.0.1:7443")]
    pub grpc_listen: SocketAddr,
    /// Address for admin HTTP.
    #[arg(long = "admin-listen", default_value = "127.0.0.1:9153")]
    pub admin_listen: SocketAddr,
    /// Address of cluster east-1's VM registration API, which the demo VMs use.
    #[arg(
        long = "registration-listen",
        env = "MESHDNS_DEMO_REGISTRATION_LISTEN",
        default_value = "127.0.0.1:7480"
    )]
    pub registration_listen: SocketAddr,
    /// How long the health-checked demo VM listens, then stays silent, in turn.
    #[arg(long = "vm-cycle", env = "MESHDNS_DEMO_VM_CYCLE", default_value = "20s", value_parser = meshdns_proto::duration::parse)]
    pub vm_cycle: Duration,
    /// Most addresses in one answer (serve's --max-answers); 1 makes weights and drains visible in every answer.
    #[arg(
        long = "max-answers",
        env = "MESHDNS_DEMO_MAX_ANSWERS",
        default_value_t = 8
    )]
    pub max_answers: usize,
}

/// The demo's traffic policy file, written beside the clusters' files
/// unless one is there already: edit it and answers follow.
const POLICY: &str = "# The demo's traffic policy (README \"Traffic policy\"): edit and save;\n\
# the registry re-reads it within a second. For example:\n\
#   clusters:\n\
#     east-1:\n\
#       drain: 50\n\
clusters: {}\n";

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Config {
        flag: what,
        problem: e.to_string(),
    }
}

/// Runs the demo until `shutdown`.
pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> Result<(), Error> {
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("meshdns-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).map_err(io("--dir"))?;
    let mut files = Vec::new();
    for (name, text) in CLUSTERS {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(io("--dir"))?;
        files.push(path);
    }
    let policy = dir.join("policy.yaml");
    if !policy.exists() {
        std::fs::write(&policy, POLICY).map_err(io("--dir"))?;
    }
    // Two workers; a loopback demo needs no bigger receive buffer.
    let sockets = crate::udp::UdpSockets {
        workers: 2,
        receive_buffer: 0,
    };
    let listeners = Listeners::bind(
        &[args.dns_listen],
        args.grpc_listen,
        args.admin_listen,
        sockets,
    )
    .await?;
    let dns = listeners.dns_udp[0]
        .local_addr()
        .map_err(io("--dns-listen"))?;
    let grpc = listeners.grpc.local_addr().map_err(io("--grpc-listen"))?;
    let admin = listeners.admin.local_addr().map_err(io("--admin-listen"))?;
    // `serve`'s own defaults, in plaintext on loopback.
    let policy_flag = policy.display().to_string();
    let max_answers = args.max_answers.to_string();
    let config = ServeArgs::from_flags(&[
        "--insecure",
        "--policy",
        &policy_flag,
        "--max-answers",
        &max_answers,
    ])
    .map_err(|e| Error::Config {
        flag: "demo",
        problem: e.to_string(),
    })?
    .config()?;
    let server = tokio::spawn(crate::serve(config, listeners, shutdown.clone()));
    let mut vm_demo = None;
    for path in &files {
        let overrides = Overrides {
            version: format!("{} (demo)", env!("CARGO_PKG_VERSION")),
            ..Overrides::default()
        };
        let exports = file::follow(
            path.clone(),
            overrides,
            Duration::from_millis(250),
            shutdown.clone(),
        );
        // east-1 also serves VMs: registrations and health checks.
        let exports = if vm_demo.is_none() {
            let (checked, demo) = vms::start(
                exports,
                &dir,
                args.registration_listen,
                args.vm_cycle,
                shutdown.clone(),
            )
            .await?;
            vm_demo = Some(demo);
            checked
        } else {
            exports
        };
        let publisher = PublishConfig {
            url: format!("http://{grpc}"),
            auth: meshdns_proto::client::ClientAuth {
                insecure: true,
                ..Default::default()
            },
            heartbeat: Duration::from_secs(5),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            max_message_bytes: publish::DEFAULT_MAX_MESSAGE_BYTES,
            refusals: Default::default(),
        };
        tokio::spawn(publish::run(publisher, exports, shutdown.clone()));
    }
    let port = dns.port();
    let at = format!("@{} -p {port}", dns.ip());
    println!(
        "meshdns demo: registry and authoritative DNS for global., with three simulated clusters\n\
         \n  DNS    {dns} (UDP and TCP)\n  gRPC   {grpc} (plaintext: loopback only)\n  admin  http://{admin}/readyz\n\
         \n  clusters (each a file-source syncer streaming over gRPC; edit a file and answers follow):\n    \
         east-1  us-east/us-east-1a  asks from 127.0.0.2  {}\n    \
         east-2  us-east/us-east-1b  asks from 127.0.0.3  {}\n    \
         west-1  us-west/us-west-1a  asks from 127.0.0.4  {}\n\
         \n  traffic policy (weights, drains, failover; edit and answers follow): {}\n\
         \nTry:\n  dig {at} web.shop.global\n  dig {at} web.shop.global AAAA\n  dig {at} east-2.web.shop.global\n  \
         dig {at} db-0.east-1.db.data.global\n  dig {at} _http._tcp.web.shop.global SRV\n  dig {at} api.shop.global\n  \
         dig {at} nope.shop.global\n  dig -b 127.0.0.4 {at} web.shop.global\n\nCtrl-C stops the demo.",
        files[0].display(),
        files[1].display(),
        files[2].display(),
        policy.display(),
    );
    if let Some(demo) = &vm_demo {
        println!(
            "\nVMs (east-1's syncer serves the registration API; see README \"Virtual machines\"):\n  \
             registrations  http://{}/v1/registrations (token {:?}, file {})\n  \
             cart-vm-1      10.1.9.10 registers itself into shop/cart beside its pod:  dig {at} cart.shop.global\n  \
             checkout-vm-1  10.1.9.20, TCP-checked on port {} (really 127.0.0.1:{}), leaves and comes back:  dig {at} checkout.shop.global",
            demo.api,
            vms::TOKEN,
            demo.token_file.display(),
            demo.checkout_port,
            demo.checkout_port,
        );
    }
    match server.await {
        Ok(result) => result,
        Err(e) => Err(Error::Serve {
            what: "demo server",
            source: Box::new(e),
        }),
    }
}
