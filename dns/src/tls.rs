//! The registry's TLS: a rustls acceptor whose certificate, key and client
//! CA are re-read when their files change, so a rotated Secret (cert-manager,
//! a mounted Kubernetes Secret swapped in place) needs no restart.
//!
//! tonic's `ServerTlsConfig` is fixed when the server starts, so the gRPC
//! server is given connections that are already TLS: each accepted TCP
//! connection is handshaken here, concurrently and with a deadline, against
//! the configuration current at that moment. Connections already open keep
//! the certificate they were made with; the next one gets the new one.
//! `tokio_rustls::server::TlsStream` carries the peer's certificates into
//! tonic's `TlsConnectInfo`, so `Request::peer_certs` (and `auth.rs`) work
//! as with tonic's own TLS.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::grpc_listener::Admitted;

use crate::config::TlsPem;
use crate::metrics::Metrics;

/// How often the files are looked at. New content is taken once it reads
/// the same on two looks in a row, so a file being written is not used.
const POLL: Duration = Duration::from_millis(500);
/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past this, accepting waits.
const MAX_HANDSHAKES: usize = 1_024;

/// Why TLS material was not taken: not retryable until the files change.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no PEM certificate in the certificate file")]
    NoCertificate,
    #[error("the certificate file does not parse as PEM: {0}")]
    Certificate(String),
    #[error("the key file holds no usable PEM private key: {0}")]
    Key(String),
    #[error("no PEM certificate in the client CA file")]
    NoClientCa,
    #[error("the client CA is not usable: {0}")]
    ClientCa(String),
    #[error("the certificate and key do not go together: {0}")]
    Pair(rustls::Error),
}

impl TlsError {
    /// The flag whose file is at fault.
    pub fn flag(&self) -> &'static str {
        match self {
            TlsError::Key(_) => "--tls-key",
            TlsError::NoClientCa | TlsError::ClientCa(_) => "--tls-client-ca",
            _ => "--tls-cert",
        }
    }
}

/// The rustls configuration for this PEM material: TLS 1.2 and 1.3 with
/// ring, ALPN h2, and with a client CA an optional client certificate (a
/// caller may present a bearer token instead).
pub fn server_config(pem: &TlsPem) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| TlsError::Key(e.to_string()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Pair)?;
    let builder = match &pem.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| TlsError::ClientCa(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoClientCa);
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // Checks that the key is the certificate's (a half-rotated pair fails).
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(TlsError::Pair)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The current TLS configuration, replaced when the files change.
#[derive(Debug)]
pub struct ReloadingTls {
    current: ArcSwap<ServerConfig>,
    files: TlsFiles,
    /// What the current configuration was built from.
    loaded: ArcSwap<Vec<u8>>,
    metrics: Arc<Metrics>,
}

/// Where the registry's TLS material is read from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn read(&self) -> Result<TlsPem, TlsError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.clone(),
                source,
            })
        };
        Ok(TlsPem {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            client_ca: self.client_ca.as_ref().map(read).transpose()?,
            files: Some(self.clone()),
        })
    }
}

/// All of the material, to tell whether any of it changed.
fn fingerprint(pem: &TlsPem) -> Vec<u8> {
    let mut all = Vec::with_capacity(pem.cert.len() + pem.key.len() + 16);
    for part in [Some(&pem.cert), Some(&pem.key), pem.client_ca.as_ref()] {
        let part = part.map_or(&[][..], Vec::as_slice);
        all.extend_from_slice(&(part.len() as u64).to_le_bytes());
        all.extend_from_slice(part);
    }
    all
}

impl ReloadingTls {
    /// The configuration for `pem` as read at start; reloads need its files.
    pub fn new(pem: &TlsPem, metrics: Arc<Metrics>) -> Result<Arc<Self>, TlsError> {
        let config = server_config(pem)?;
        Ok(Arc::new(ReloadingTls {
            current: ArcSwap::new(config),
            files: pem.files.clone().unwrap_or(TlsFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
                client_ca: None,
            }),
            loaded: ArcSwap::from_pointee(fingerprint(pem)),
            metrics,
        }))
    }

    /// The configuration a new connection is handshaken with.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Re-reads the files when their content changes, until `shutdown`.
    /// Content that does not make a working configuration (unreadable,
    /// unparsable, a key that is not the certificate's) is reported once
    /// and the current configuration kept.
    pub async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        if self.files.cert.as_os_str().is_empty() {
            return;
        }
        let mut pending: Option<Vec<u8>> = None;
        let mut rejected: Option<Vec<u8>> = None;
        let mut unreadable = false;
        let mut ticker = tokio::time::interval(POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let pem = match self.files.read() {
                Ok(pem) => {
                    unreadable = false;
                    pem
                }
                Err(e) => {
                    if !unreadable {
                        unreadable = true;
                        self.metrics.tls_reload("rejected");
                        warn!(error = %e, "cannot read the TLS files; keeping the current certificate");
                    }
                    continue;
                }
            };
            let seen = fingerprint(&pem);
            if seen == **self.loaded.load() || Some(&seen) == rejected.as_ref() {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&seen) {
                pending = Some(seen);
                continue;
            }
            pending = None;
            match server_config(&pem) {
                Ok(config) => {
                    self.current.store(config);
                    self.loaded.store(Arc::new(seen));
                    rejected = None;
                    self.metrics.tls_reload("applied");
                    info!(cert = %self.files.cert.display(), "TLS certificate, key and client CA reloaded; new connections use them");
                }
                Err(e) => {
                    rejected = Some(seen);
                    self.metrics.tls_reload("rejected");
                    warn!(flag = e.flag(), error = %e, "new TLS files rejected; keeping the current certificate");
                }
            }
        }
    }
}

/// TLS connections from `tcp`: each handshake runs in its own task (a
/// slow client holds up no one), bounded in time and in number, against
/// the configuration current when it was accepted. Ends with `shutdown`.
pub fn incoming(
    tcp: impl Stream<Item = io::Result<Admitted>> + Send + 'static,
    tls: Arc<ReloadingTls>,
    shutdown: CancellationToken,
) -> impl Stream<Item = io::Result<TlsStream<Admitted>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let mut tcp = std::pin::pin!(tcp);
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = tcp.next() => accepted,
            };
            let stream = match accepted {
                None => return,
                Some(Ok(stream)) => stream,
                Some(Err(e)) => {
                    debug!(error = %e, "grpc accept error");
                    continue;
                }
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => debug!(error = %e, "tls handshake failed"),
                    Err(_) => debug!("tls handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
