//! Who is calling the registry: a cluster (may Export as itself only) or
//! a reader (followers, `status`, `/debug`: Watch, ListClusters,
//! GetService).
//!
//! Proven by an mTLS client certificate whose URI SAN is
//! `spiffe://<trust-domain>/cluster/<name>` or `.../reader/<name>`, or by a
//! bearer token listed in `--token-file` (`<token> cluster:<name>` or
//! `<token> reader:<name>` per line, `#` comments). With `--insecure` and
//! neither configured, everyone is trusted.
//!
//! The token file is polled and re-read when its content changes (a hash
//! of its bytes, not its mtime), once the content has stayed the same for
//! one poll; a file that does not parse, or lists no token, never replaces
//! the table in use. A token that leaves the file (or names someone else
//! now) ends the streams it opened ([`Credential`]), as does a client
//! certificate reaching its notAfter.
//!
//! - [`tokens`]: the token table, keyed by digest, compared in constant time.
//! - [`credential`]: what a stream selects on to end when its credential does.

mod credential;
mod tokens;

pub use credential::{Credential, Revoked};
pub use tokens::{TokenFileError, parse_tokens};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};
use tracing::{info, warn};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::metrics::Metrics;
use tokens::TokenTable;

/// How often the token file is polled for a change.
const TOKEN_FILE_POLL: Duration = Duration::from_millis(500);

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Cluster(String),
    Reader(String),
    /// No authentication configured (`--insecure` without tokens).
    Anyone,
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Cluster(n) => write!(f, "cluster {n}"),
            Principal::Reader(n) => write!(f, "reader {n}"),
            Principal::Anyone => f.write_str("an unauthenticated caller"),
        }
    }
}

/// Who called, and the credential that proved it (which the caller's
/// streams watch, to end when it is revoked).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub credential: Credential,
}

/// The identity a client certificate's URI SAN names, and its expiry.
fn from_certificate(der: &[u8], trust_domain: &str) -> Option<Caller> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let prefix = format!("spiffe://{trust_domain}/");
    let principal = san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => {
            let path = uri.strip_prefix(&prefix)?;
            match path.split_once('/')? {
                ("cluster", n) => Some(Principal::Cluster(n.to_owned())),
                ("reader", n) => Some(Principal::Reader(n.to_owned())),
                _ => None,
            }
        }
        _ => None,
    })?;
    let not_after = cert.validity().not_after;
    Some(Caller {
        principal,
        credential: Credential::certificate(not_after.timestamp(), not_after.to_string()),
    })
}

/// Largest token file read (a line is ~60 bytes: some 17 000 tokens).
/// A bigger one is refused naming the cap; the tokens in force stay.
pub const MAX_TOKEN_FILE_BYTES: usize = 1024 * 1024;

fn read_bounded(path: &std::path::Path) -> Result<Vec<u8>, TokenFileError> {
    Ok(crate::bounded::read(path, MAX_TOKEN_FILE_BYTES)?)
}

fn read_token_file(bytes: &[u8]) -> Result<Vec<(tokens::TokenDigest, Principal)>, TokenFileError> {
    let text = std::str::from_utf8(bytes).map_err(|_| TokenFileError::NotUtf8)?;
    parse_tokens(text)
}

/// The registry's authentication settings and live token table.
#[derive(Debug)]
pub struct Auth {
    trust_domain: String,
    token_file: Option<PathBuf>,
    tokens: ArcSwap<TokenTable>,
    /// The digest of the token file's bytes read at start.
    loaded: Option<[u8; 32]>,
    /// mTLS or tokens configured: callers must prove who they are.
    required: bool,
    metrics: Arc<Metrics>,
}

impl Auth {
    /// Reads the token file (if any) once.
    pub fn new(
        trust_domain: String,
        token_file: Option<PathBuf>,
        mtls: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TokenFileError> {
        let (tokens, loaded) = match &token_file {
            Some(path) => {
                let bytes = read_bounded(path)?;
                (
                    read_token_file(&bytes)?,
                    Some(crate::bounded::digest(&bytes)),
                )
            }
            None => (Vec::new(), None),
        };
        let required = mtls || token_file.is_some();
        Ok(Auth {
            trust_domain,
            token_file,
            tokens: ArcSwap::from_pointee(TokenTable::new(tokens)),
            loaded,
            required,
            metrics,
        })
    }

    /// Callers must prove who they are (mTLS or tokens configured).
    pub fn required(&self) -> bool {
        self.required
    }

    /// Who holds bearer `token`, if the token file lists it.
    pub fn bearer(&self, token: &str) -> Option<Caller> {
        self.tokens
            .load()
            .lookup(token)
            .map(|(principal, revoked)| Caller {
                principal,
                credential: Credential::token(revoked),
            })
    }

    /// Who sent `request`.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        if let Some(certs) = request.peer_certs()
            && let Some(first) = certs.first()
        {
            return from_certificate(first.as_ref(), &self.trust_domain).ok_or_else(|| {
                Status::unauthenticated(format!(
                    "the client certificate names no spiffe://{}/cluster/<name> or /reader/<name> URI",
                    self.trust_domain
                ))
            });
        }
        if let Some(value) = request.metadata().get("authorization") {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            return token
                .and_then(|t| self.bearer(t))
                .ok_or_else(|| Status::unauthenticated("unknown bearer token"));
        }
        if self.required {
            Err(Status::unauthenticated(
                "a client certificate or a bearer token is required",
            ))
        } else {
            Ok(Caller {
                principal: Principal::Anyone,
                credential: Credential::default(),
            })
        }
    }

    /// May `who` export as `cluster`?
    pub fn may_export(&self, who: &Principal, cluster: &str) -> Result<(), Status> {
        match who {
            Principal::Anyone => Ok(()),
            Principal::Cluster(n) if n == cluster => Ok(()),
            other => Err(Status::permission_denied(format!(
                "{other} may not export as cluster {cluster}"
            ))),
        }
    }

    /// May `who` read the registry (Watch, ListClusters, GetService)?
    pub fn may_read(&self, who: &Principal) -> Result<(), Status> {
        match who {
            Principal::Anyone | Principal::Reader(_) => Ok(()),
            other => Err(Status::permission_denied(format!(
                "{other} has no read access; use a reader credential"
            ))),
        }
    }

    /// May `who` watch the clusterset's view (WatchImports)? Readers, and
    /// clusters: a syncer keeps its cluster's ServiceImports from it. It
    /// holds no address, so a member learns no more than what its own
    /// ServiceImports show (SECURITY.md).
    pub fn may_watch_imports(&self, who: &Principal) -> Result<(), Status> {
        match who {
            Principal::Anyone | Principal::Reader(_) | Principal::Cluster(_) => Ok(()),
        }
    }

    /// Re-reads the token file when its content changes, until `shutdown`.
    /// New content is taken once it is the same on two polls in a row (a
    /// file being written is not read half-way); content that does not
    /// parse or lists no token is reported once and the old table kept.
    pub async fn follow_tokens(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(path) = self.token_file.clone() else {
            return;
        };
        let mut applied = self.loaded;
        let mut rejected: Option<[u8; 32]> = None;
        let mut pending: Option<[u8; 32]> = None;
        let mut unreadable = false;
        let mut ticker = tokio::time::interval(TOKEN_FILE_POLL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let bytes = match read_bounded(&path) {
                Ok(bytes) => {
                    unreadable = false;
                    bytes
                }
                Err(e) => {
                    if !unreadable {
                        unreadable = true;
                        self.metrics.token_file_reload("rejected");
                        warn!(path = %path.display(), error = %e, "cannot read the token file; keeping the previous tokens");
                    }
                    continue;
                }
            };
            let digest = crate::bounded::digest(&bytes);
            if Some(digest) == applied || Some(digest) == rejected {
                pending = None;
                continue;
            }
            if pending != Some(digest) {
                pending = Some(digest);
                continue;
            }
            pending = None;
            match read_token_file(&bytes).and_then(|tokens| {
                if tokens.is_empty() {
                    Err(TokenFileError::Empty)
                } else {
                    Ok(tokens)
                }
            }) {
                Ok(tokens) => {
                    applied = Some(digest);
                    rejected = None;
                    self.replace(tokens, &path);
                }
                Err(e) => {
                    rejected = Some(digest);
                    self.metrics.token_file_reload("rejected");
                    warn!(path = %path.display(), error = %e, "token file rejected; keeping the previous tokens");
                }
            }
        }
    }

    /// Puts `tokens` in place, then ends the streams of tokens that left.
    fn replace(&self, tokens: Vec<(tokens::TokenDigest, Principal)>, path: &std::path::Path) {
        let (table, revoked) = self.tokens.load().successor(tokens);
        let count = table.len();
        self.tokens.store(Arc::new(table));
        for token in &revoked {
            token.cancel();
        }
        self.metrics.token_file_reload("applied");
        self.metrics.tokens_revoked(revoked.len() as u64);
        info!(path = %path.display(), tokens = count, revoked = revoked.len(), "token file reloaded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EAST: &str = "east1-token-0123456789abcdef";
    const WEST: &str = "west1-token-0123456789abcdef";

    fn who(auth: &Auth, token: &str) -> Option<Principal> {
        auth.bearer(token).map(|c| c.principal)
    }

    /// Waits (a few polls at most) for `check` to hold.
    async fn soon(what: &str, check: impl Fn() -> bool) {
        for _ in 0..100 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn reloads_follow_content_and_keep_a_good_table() {
        let dir = std::env::temp_dir().join(format!("meshdns-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        std::fs::write(&path, format!("{EAST} cluster:east-1\n")).unwrap();
        let metrics = Arc::new(Metrics::new());
        let auth =
            Arc::new(Auth::new("meshdns".into(), Some(path.clone()), false, metrics).unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(auth.clone().follow_tokens(stop.clone()));
        let east = auth.bearer(EAST).unwrap().credential;
        // Garbage, then an empty file: the table stays, the stream too.
        for bad in ["garbage\n", "", "# nothing\n"] {
            std::fs::write(&path, bad).unwrap();
            tokio::time::sleep(TOKEN_FILE_POLL * 4).await;
            assert_eq!(
                who(&auth, EAST),
                Some(Principal::Cluster("east-1".into())),
                "{bad:?}"
            );
        }
        // Same length, different content: taken.
        std::fs::write(&path, format!("{WEST} cluster:east-1\n")).unwrap();
        soon("west's token", || who(&auth, WEST).is_some()).await;
        assert_eq!(who(&auth, EAST), None);
        let revoked = tokio::time::timeout(Duration::from_secs(1), east.revoked()).await;
        assert_eq!(revoked, Ok(Revoked::Token));
        stop.cancel();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_token_file_over_the_cap_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("meshdns-auth-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        let mut text = format!("{EAST} cluster:east-1\n");
        text.push_str(&"#".repeat(MAX_TOKEN_FILE_BYTES));
        std::fs::write(&path, text).unwrap();
        let err = Auth::new(
            "meshdns".into(),
            Some(path),
            false,
            Arc::new(Metrics::new()),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("over the limit of 1048576 bytes"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
