//! The hub's TLS material rotated under a running `meshdns serve`, the way
//! the kubelet updates a mounted Secret (cert-manager renewing it): the
//! files are symlinks into `..data`, and a new version is swapped in by
//! renaming one symlink. New connections get the new certificate and are
//! judged by the new client CA; connections already open keep working;
//! a half-rotated pair (a key that is not the certificate's) is refused
//! and the current certificate kept. The process never restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshdns_proto::client::{Client, ClientAuth};
use meshdns_proto::wire;
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{Proc, eventually, free_port, http_get};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

/// Mints (or, when `out` holds a CA already, re-mints under it) the
/// server certificate and a `status` reader with deploy/certs/mint.sh.
fn mint(out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/certs/mint.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(out)
        .args(["--reader", "status"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("bash and openssl");
    assert!(status.success(), "mint.sh failed");
}

/// A directory laid out as the kubelet lays out a Secret volume.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["tls.crt", "tls.key", "ca.crt"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        SecretVolume { dir, version: 0 }
    }

    /// Publishes a new version in one step: `..data` is renamed over.
    fn publish(&mut self, cert: &Path, key: &Path, ca: &Path) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        let target = self.dir.join(&version);
        std::fs::create_dir(&target).unwrap();
        std::fs::copy(cert, target.join("tls.crt")).unwrap();
        std::fs::copy(key, target.join("tls.key")).unwrap();
        std::fs::copy(ca, target.join("ca.crt")).unwrap();
        let link = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &link).unwrap();
        std::fs::rename(&link, self.dir.join("..data")).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

fn pem_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

/// The certificate a new TLS connection to `addr` is shown, checked
/// against `ca`; `None` if the handshake fails.
async fn served_certificate(addr: SocketAddr, ca: &Path) -> Option<CertificateDer<'static>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem_cert(ca)).ok()?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .ok()?;
    let (_, session) = tls.get_ref();
    session.peer_certificates()?.first().cloned()
}

/// A reader client of `pki` over a new connection.
async fn reader(url: &str, pki: &Path) -> Result<Client, meshdns_proto::ClientError> {
    ClientAuth {
        ca: Some(pki.join("ca.crt")),
        cert: Some(pki.join("reader-status.crt")),
        key: Some(pki.join("reader-status.key")),
        token_file: None,
        insecure: false,
    }
    .connect(url)
    .await
}

async fn lists(client: &mut Client) -> bool {
    client
        .list_clusters(wire::ListClustersRequest {})
        .await
        .is_ok()
}

async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let (_, body) = http_get(admin, "/metrics").await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_rotated_certificate_and_client_ca_are_served_without_a_restart() {
    let dir = TempDir::new("tls-rotation");
    let (first, second) = (dir.path().join("pki-a"), dir.path().join("pki-b"));
    mint(&first);
    let a1_cert = first.join("v1-server.crt");
    let a1_key = first.join("v1-server.key");
    std::fs::copy(first.join("server.crt"), &a1_cert).unwrap();
    std::fs::copy(first.join("server.key"), &a1_key).unwrap();
    let mut volume = SecretVolume::new(dir.path().join("tls"));
    volume.publish(&a1_cert, &a1_key, &first.join("ca.crt"));

    let (dns, grpc, admin) = (free_port(), free_port(), free_port());
    let (dns, grpc_addr, admin) = (
        format!("127.0.0.1:{dns}"),
        format!("127.0.0.1:{grpc}"),
        format!("127.0.0.1:{admin}"),
    );
    let (cert, key, ca) = (
        volume.path("tls.crt"),
        volume.path("tls.key"),
        volume.path("ca.crt"),
    );
    let mut hub = Proc::start(
        "meshdns",
        &[
            "serve",
            "--dns-listen",
            &dns,
            "--grpc-listen",
            &grpc_addr,
            "--admin-listen",
            &admin,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );
    let admin: SocketAddr = admin.parse().unwrap();
    let grpc: SocketAddr = grpc_addr.parse().unwrap();
    let url = format!("https://{grpc_addr}");
    eventually(
        Duration::from_secs(20),
        "the hub's /readyz",
        || async move { matches!(http_get(admin, "/readyz").await, Ok((200, _))).then_some(()) },
    )
    .await;

    // Version 1: CA A's first server certificate.
    let ca_a = first.join("ca.crt");
    assert_eq!(
        served_certificate(grpc, &ca_a).await,
        Some(pem_cert(&a1_cert))
    );
    let mut before = reader(&url, &first).await.unwrap();
    assert!(lists(&mut before).await, "a CA A reader is accepted");

    // Version 2: a new key and certificate from the same CA.
    mint(&first);
    assert_ne!(pem_cert(&first.join("server.crt")), pem_cert(&a1_cert));
    volume.publish(
        &first.join("server.crt"),
        &first.join("server.key"),
        &first.join("ca.crt"),
    );
    let a2 = pem_cert(&first.join("server.crt"));
    eventually(Duration::from_secs(10), "the new certificate", || {
        let (ca, a2) = (ca_a.clone(), a2.clone());
        async move { (served_certificate(grpc, &ca).await == Some(a2)).then_some(()) }
    })
    .await;
    assert!(
        lists(&mut before).await,
        "a connection opened before the rotation keeps working"
    );
    assert!(lists(&mut reader(&url, &first).await.unwrap()).await);

    // Version 3: a new CA, for the server and for client certificates.
    mint(&second);
    volume.publish(
        &second.join("server.crt"),
        &second.join("server.key"),
        &second.join("ca.crt"),
    );
    let ca_b = second.join("ca.crt");
    let b = pem_cert(&second.join("server.crt"));
    eventually(Duration::from_secs(10), "CA B's certificate", || {
        let (ca, b) = (ca_b.clone(), b.clone());
        async move { (served_certificate(grpc, &ca).await == Some(b)).then_some(()) }
    })
    .await;
    assert_eq!(
        served_certificate(grpc, &ca_a).await,
        None,
        "a client trusting only CA A no longer trusts the hub"
    );
    assert!(
        lists(&mut reader(&url, &second).await.unwrap()).await,
        "a CA B reader is accepted on a new connection"
    );
    let a_reader = match reader(&url, &first).await {
        Ok(mut client) => lists(&mut client).await,
        Err(_) => false,
    };
    assert!(!a_reader, "a CA A reader is refused: the client CA rotated");
    let applied = metric(admin, "meshdns_tls_reloads_total{result=\"applied\"}").await;
    assert!(applied >= 2.0, "two reloads applied, counted: {applied}");

    // Version 4, broken: CA A's key beside CA B's certificate.
    volume.publish(
        &second.join("server.crt"),
        &first.join("server.key"),
        &second.join("ca.crt"),
    );
    eventually(
        Duration::from_secs(10),
        "the refusal counted",
        || async move {
            (metric(admin, "meshdns_tls_reloads_total{result=\"rejected\"}").await >= 1.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        served_certificate(grpc, &ca_b).await,
        Some(b),
        "the last good certificate is kept"
    );
    assert!(lists(&mut reader(&url, &second).await.unwrap()).await);

    assert!(
        hub.0.try_wait().unwrap().is_none(),
        "the same process served every version"
    );
    hub.signal("TERM");
    assert!(hub.wait_exit(Duration::from_secs(15)).is_some());
}
