//! Who is calling the registry: a cluster (may Export as itself only) or
//! a reader (followers, `status`: Watch, ListClusters, GetService).
//!
//! Proven by an mTLS client certificate whose URI SAN is
//! `spiffe://<trust-domain>/cluster/<name>` or `.../reader/<name>`, or by a
//! bearer token listed in `--token-file` (`<token> cluster:<name>` or
//! `<token> reader:<name>` per line, `#` comments; re-read when it changes).
//! With `--insecure` and neither configured, everyone is trusted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};
use tracing::{info, warn};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

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

/// Parses `cluster:<name>` / `reader:<name>`.
fn principal(text: &str) -> Option<Principal> {
    match text.split_once(':')? {
        ("cluster", name) if !name.is_empty() => Some(Principal::Cluster(name.to_owned())),
        ("reader", name) if !name.is_empty() => Some(Principal::Reader(name.to_owned())),
        _ => None,
    }
}

/// Parses a token file; the error names the line.
pub fn parse_tokens(text: &str) -> Result<HashMap<String, Principal>, String> {
    let mut tokens = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(token), Some(who), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "line {}: want `<token> cluster:<name>` or `<token> reader:<name>`",
                i + 1
            ));
        };
        let who = principal(who).ok_or_else(|| {
            format!(
                "line {}: {who:?} is not cluster:<name> or reader:<name>",
                i + 1
            )
        })?;
        if token.len() < 16 {
            return Err(format!(
                "line {}: tokens must be at least 16 characters",
                i + 1
            ));
        }
        tokens.insert(token.to_owned(), who);
    }
    Ok(tokens)
}

/// The identity a client certificate's URI SAN names.
fn from_certificate(der: &[u8], trust_domain: &str) -> Option<Principal> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let prefix = format!("spiffe://{trust_domain}/");
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => {
            let path = uri.strip_prefix(&prefix)?;
            match path.split_once('/')? {
                ("cluster", n) => Some(Principal::Cluster(n.to_owned())),
                ("reader", n) => Some(Principal::Reader(n.to_owned())),
                _ => None,
            }
        }
        _ => None,
    })
}

/// The registry's authentication settings and live token table.
#[derive(Debug)]
pub struct Auth {
    trust_domain: String,
    token_file: Option<PathBuf>,
    tokens: ArcSwap<HashMap<String, Principal>>,
    /// mTLS or tokens configured: callers must prove who they are.
    required: bool,
}

impl Auth {
    /// Reads the token file (if any) once; errors name the flag.
    pub fn new(
        trust_domain: String,
        token_file: Option<PathBuf>,
        mtls: bool,
    ) -> Result<Self, String> {
        let tokens = match &token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                parse_tokens(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => HashMap::new(),
        };
        let required = mtls || token_file.is_some();
        Ok(Auth {
            trust_domain,
            token_file,
            tokens: ArcSwap::from_pointee(tokens),
            required,
        })
    }

    /// Who sent `request`.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
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
            return match token.and_then(|t| self.tokens.load().get(t).cloned()) {
                Some(p) => Ok(p),
                None => Err(Status::unauthenticated("unknown bearer token")),
            };
        }
        if self.required {
            Err(Status::unauthenticated(
                "a client certificate or a bearer token is required",
            ))
        } else {
            Ok(Principal::Anyone)
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

    /// Re-reads the token file when it changes, until `shutdown`. A bad
    /// new file is reported and the old table kept.
    pub async fn follow_tokens(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(path) = self.token_file.clone() else {
            return;
        };
        let stamp = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut last: Option<SystemTime> = stamp(&path);
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| parse_tokens(&t))
            {
                Ok(tokens) => {
                    info!(path = %path.display(), tokens = tokens.len(), "token file reloaded");
                    self.tokens.store(Arc::new(tokens));
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "token file rejected; keeping the previous tokens")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files() {
        let t = parse_tokens(
            "# fleet\nabcdefghijklmnop1 cluster:east-1\nabcdefghijklmnop2 reader:status\n",
        )
        .unwrap();
        assert_eq!(t["abcdefghijklmnop1"], Principal::Cluster("east-1".into()));
        assert_eq!(t["abcdefghijklmnop2"], Principal::Reader("status".into()));
        assert!(
            parse_tokens("short cluster:x")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            parse_tokens("abcdefghijklmnop1 admin:x")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            parse_tokens("abcdefghijklmnop1")
                .unwrap_err()
                .contains("line 1")
        );
    }
}
