//! Transport security and identity: gRPC over TLS, clusters proven by mTLS
//! certificates (minted by deploy/certs/mint.sh with openssl) or bearer
//! tokens, a cluster speaking only for itself, read-only credentials for
//! `status` and followers, token files re-read on change.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use meshdns_proto::client::ClientAuth;
use meshdns_proto::wire::{self, export_request::Message as Req};
use meshdns_tests::dns::{Ask, addresses, poll, sorted};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{TestServer, TestSyncer, bin, eventually};

const TOKEN_EAST: &str = "east1-token-0123456789abcdef";
const TOKEN_WEST: &str = "west1-token-0123456789abcdef";
const TOKEN_READER: &str = "reader-token-0123456789abcdef";

fn mint(dir: &Path, extra: &[&str]) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/certs/mint.sh");
    let out = dir.join("pki");
    let status = Command::new("bash")
        .arg(script)
        .arg(&out)
        .args([
            "--cluster",
            "east-1",
            "--cluster",
            "west-1",
            "--reader",
            "status",
        ])
        .args(extra)
        .status()
        .expect("bash and openssl");
    assert!(status.success(), "mint.sh failed");
    out
}

struct Pki {
    dir: TempDir,
    pki: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = TempDir::new("pki");
        let pki = mint(dir.path(), &[]);
        dir.write(
            "tokens",
            &format!("# test fleet\n{TOKEN_EAST} cluster:east-1\n{TOKEN_READER} reader:status\n"),
        );
        Pki { dir, pki }
    }

    fn p(&self, name: &str) -> String {
        self.pki.join(name).display().to_string()
    }

    fn server_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.p("server.crt"),
            "--tls-key".into(),
            self.p("server.key"),
            "--tls-client-ca".into(),
            self.p("ca.crt"),
            "--token-file".into(),
            self.dir.path().join("tokens").display().to_string(),
        ]
    }

    fn client(&self, cert: Option<&str>, token: Option<&str>) -> ClientAuth {
        let token_file = token.map(|t| self.dir.write(&format!("token-{}", &t[..5]), t));
        ClientAuth {
            ca: Some(self.pki.join("ca.crt")),
            cert: cert.map(|c| self.pki.join(format!("{c}.crt"))),
            key: cert.map(|c| self.pki.join(format!("{c}.key"))),
            token_file,
            insecure: false,
        }
    }
}

async fn tls_server(pki: &Pki) -> (TestServer, String) {
    let flags = pki.server_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = TestServer::start(&flags).await;
    let url = format!("https://127.0.0.1:{}", server.grpc.port());
    (server, url)
}

/// A raw TLS handshake with the registry at `addr`, trusting `ca` and
/// presenting `client` (certificate, key), then an HTTP/2 preface and one
/// read: what the TLS layer said, so a refusal is told apart from an
/// unreachable server (whose connect fails before any of this).
async fn tls_probe(
    addr: std::net::SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the registry is reachable");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

/// Opens an Export stream with `hello` for `cluster`; the first response or the error.
async fn hello_as(
    auth: &ClientAuth,
    url: &str,
    cluster: &str,
) -> Result<wire::ExportResponse, tonic::Status> {
    let mut client = auth
        .connect(url)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let hello = wire::Hello {
        cluster: cluster.into(),
        ..Default::default()
    };
    tx.send(wire::ExportRequest {
        generation: 1,
        message: Some(Req::Hello(hello)),
    })
    .await
    .unwrap();
    let mut stream = client
        .export(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unknown("no response"))?;
    drop(tx);
    Ok(first)
}

const FILE: &str = "cluster: east-1\nservices:\n  - {name: web, namespace: shop, ports: [{port: 80}], endpoints: [{ip: 10.1.0.1}]}\n";

async fn wait_web(server: &TestServer, expected: &[&str]) {
    let (dns, want) = (server.dns, sorted(expected));
    eventually(Duration::from_secs(10), "web.shop", || {
        let want = want.clone();
        async move {
            (addresses(&poll(dns, &Ask::new("web.shop.global", RecordType::A)).await?) == want)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_clusters_speak_only_for_themselves() {
    let pki = Pki::new();
    let (server, url) = tls_server(&pki).await;
    // A syncer with east-1's certificate exports east-1.
    let file = pki.dir.write("east-1.yaml", FILE);
    let tls = [
        "--tls-ca",
        &pki.p("ca.crt"),
        "--tls-cert",
        &pki.p("cluster-east-1.crt"),
        "--tls-key",
        &pki.p("cluster-east-1.key"),
    ];
    let syncer = TestSyncer::start(&file, std::slice::from_ref(&url), &tls);
    wait_web(&server, &["10.1.0.1"]).await;
    // The same certificate claiming west-1: PermissionDenied.
    let east = pki.client(Some("cluster-east-1"), None);
    let err = hello_as(&east, &url, "west-1")
        .await
        .expect_err("spoofed hello refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(
        err.message()
            .contains("cluster east-1 may not export as cluster west-1"),
        "{}",
        err.message()
    );
    // No certificate and no token: Unauthenticated.
    let anonymous = pki.client(None, None);
    let err = hello_as(&anonymous, &url, "east-1")
        .await
        .expect_err("anonymous refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    // A reader certificate cannot export.
    let reader = pki.client(Some("reader-status"), None);
    assert_eq!(
        hello_as(&reader, &url, "east-1").await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    // Plaintext to the TLS port does not get through: the server is up
    // (the syncer above just got in) and answers the cleartext HTTP/2
    // preface with TLS, not with a refused connection.
    let plain = ClientAuth {
        insecure: true,
        ..ClientAuth::default()
    };
    hello_as(
        &plain,
        &format!("http://127.0.0.1:{}", server.grpc.port()),
        "east-1",
    )
    .await
    .expect_err("plaintext refused");
    // On the wire: the cleartext HTTP/2 preface is answered with a TLS
    // alert record (content type 21), never with HTTP/2.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(server.grpc)
            .await
            .expect("the registry is reachable");
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply)).await;
        assert_eq!(reply.first(), Some(&21), "a TLS alert, got {reply:?}");
    }
    // And a client with the fleet's certificate gets through the same port.
    let east_cert = (
        pki.pki.join("cluster-east-1.crt"),
        pki.pki.join("cluster-east-1.key"),
    );
    tls_probe(
        server.grpc,
        &pki.pki.join("ca.crt"),
        Some((&east_cert.0, &east_cert.1)),
    )
    .await
    .expect("the fleet's own certificate is accepted");
    syncer.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let (server, url) = tls_server(&pki).await;
    let other = TempDir::new("other-pki");
    let rogue = mint(other.path(), &[]);
    let auth = ClientAuth {
        ca: Some(pki.pki.join("ca.crt")),
        cert: Some(rogue.join("cluster-east-1.crt")),
        key: Some(rogue.join("cluster-east-1.key")),
        token_file: None,
        insecure: false,
    };
    hello_as(&auth, &url, "east-1")
        .await
        .expect_err("foreign client certificate refused");
    // The refusal is the server's TLS alert about the certificate, from a
    // server that takes the fleet's own certificate on the same port.
    let ca = pki.pki.join("ca.crt");
    let (own, own_key) = (
        pki.pki.join("cluster-east-1.crt"),
        pki.pki.join("cluster-east-1.key"),
    );
    tls_probe(server.grpc, &ca, Some((&own, &own_key)))
        .await
        .expect("the fleet's own certificate is accepted");
    let (rogue_cert, rogue_key) = (
        rogue.join("cluster-east-1.crt"),
        rogue.join("cluster-east-1.key"),
    );
    let refused = tls_probe(server.grpc, &ca, Some((&rogue_cert, &rogue_key)))
        .await
        .expect_err("a foreign client certificate is refused");
    // The rogue CA has the fleet CA's name (both minted by mint.sh): its
    // certificate fails on the signature (DecryptError), a stranger's on
    // the issuer (UnknownCA).
    assert!(
        refused.contains("received fatal alert")
            && ["UnknownCA", "BadCertificate", "DecryptError"]
                .iter()
                .any(|alert| refused.contains(alert)),
        "{refused}"
    );
    // And a client that does not trust the registry's CA refuses it.
    let wrong_trust = ClientAuth {
        ca: Some(rogue.join("ca.crt")),
        ..pki.client(Some("cluster-east-1"), None)
    };
    hello_as(&wrong_trust, &url, "east-1")
        .await
        .expect_err("server certificate from another CA refused");
    let distrust = tls_probe(server.grpc, &rogue.join("ca.crt"), None)
        .await
        .expect_err("a server certificate from another CA is refused");
    assert!(
        distrust.contains("invalid peer certificate")
            && ["UnknownIssuer", "BadSignature"]
                .iter()
                .any(|why| distrust.contains(why)),
        "{distrust}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_and_reloads() {
    let pki = Pki::new();
    let (server, url) = tls_server(&pki).await;
    let east = pki.client(None, Some(TOKEN_EAST));
    assert!(hello_as(&east, &url, "east-1").await.is_ok());
    let err = hello_as(&east, &url, "west-1").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // west-1's token is not known yet...
    let west = pki.client(None, Some(TOKEN_WEST));
    assert_eq!(
        hello_as(&west, &url, "west-1").await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    // ...until it is added to the token file, which is re-read on change.
    pki.dir.write(
        "tokens",
        &format!("{TOKEN_EAST} cluster:east-1\n{TOKEN_READER} reader:status\n{TOKEN_WEST} cluster:west-1\n"),
    );
    let (west, url2) = (west.clone(), url.clone());
    eventually(Duration::from_secs(10), "west-1's token accepted", || {
        let (west, url) = (west.clone(), url2.clone());
        async move { hello_as(&west, &url, "west-1").await.ok().map(|_| ()) }
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_status_and_followers() {
    let pki = Pki::new();
    let (server, url) = tls_server(&pki).await;
    let file = pki.dir.write("east-1.yaml", FILE);
    let token_file = pki
        .dir
        .write("east-token", TOKEN_EAST)
        .display()
        .to_string();
    let syncer = TestSyncer::start(
        &file,
        std::slice::from_ref(&url),
        &["--tls-ca", &pki.p("ca.crt"), "--token-file", &token_file],
    );
    wait_web(&server, &["10.1.0.1"]).await;
    // `meshdns status` with the reader certificate.
    let out = Command::new(bin("meshdns"))
        .args(["status", "--registry", &url, "--tls-ca", &pki.p("ca.crt")])
        .args([
            "--tls-cert",
            &pki.p("reader-status.crt"),
            "--tls-key",
            &pki.p("reader-status.key"),
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("east-1"), "{text}");
    // A cluster credential has no read access.
    let out = Command::new(bin("meshdns"))
        .args(["status", "--registry", &url, "--tls-ca", &pki.p("ca.crt")])
        .args([
            "--tls-cert",
            &pki.p("cluster-east-1.crt"),
            "--tls-key",
            &pki.p("cluster-east-1.key"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && text.contains("read access"),
        "{text}"
    );
    // A follower with the reader token mirrors the registry over TLS.
    let reader_token = pki
        .dir
        .write("reader-token", TOKEN_READER)
        .display()
        .to_string();
    let follower = TestServer::start(&[
        "--follow",
        &url,
        "--follow-tls-ca",
        &pki.p("ca.crt"),
        "--follow-token-file",
        &reader_token,
    ])
    .await;
    wait_web(&follower, &["10.1.0.1"]).await;
    follower.stop().await;
    syncer.stop().await;
    server.stop().await;
}
