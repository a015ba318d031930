//! What an open stream keeps of the credential that opened it: a future
//! that resolves when the token is revoked or the certificate expires.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a stream's credential stopped being good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    #[error(
        "credential revoked: the bearer token was removed from --token-file or names another principal now"
    )]
    Token,
    #[error("credential revoked: the client certificate expired (notAfter {0})")]
    CertificateExpired(String),
}

impl From<Revoked> for tonic::Status {
    fn from(revoked: Revoked) -> Self {
        tonic::Status::unauthenticated(revoked.to_string())
    }
}

/// The credential of an authenticated caller, as the streams it opens
/// watch it.
#[derive(Debug, Clone, Default)]
pub struct Credential {
    /// Cancelled when the bearer token is revoked.
    token: Option<CancellationToken>,
    /// The client certificate's notAfter: when, and as printed.
    expires: Option<(Instant, String)>,
}

impl Credential {
    /// A bearer token's credential, ended by `revoked`.
    pub fn token(revoked: CancellationToken) -> Self {
        Credential {
            token: Some(revoked),
            expires: None,
        }
    }

    /// A client certificate valid until `not_after` (Unix seconds).
    /// A date too far out to reach as an `Instant` never ends it.
    pub fn certificate(not_after: i64, printed: String) -> Self {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let left = u64::try_from(not_after).unwrap_or(0).saturating_sub(now);
        let expires = Instant::now()
            .checked_add(Duration::from_secs(left))
            .map(|at| (at, printed));
        Credential {
            token: None,
            expires,
        }
    }

    /// Resolves when the credential is no longer good; never, for one
    /// that cannot be revoked (`--insecure` without credentials).
    pub async fn revoked(&self) -> Revoked {
        let token = async {
            match &self.token {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let expiry = async {
            match &self.expires {
                Some((at, printed)) => {
                    tokio::time::sleep_until(*at).await;
                    printed.clone()
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = token => Revoked::Token,
            printed = expiry => Revoked::CertificateExpired(printed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_now() -> i64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    async fn ends_within(credential: &Credential, limit: Duration) -> Option<Revoked> {
        tokio::time::timeout(limit, credential.revoked()).await.ok()
    }

    #[tokio::test]
    async fn revocation_and_expiry_end_a_credential() {
        let token = CancellationToken::new();
        let credential = Credential::token(token.clone());
        assert_eq!(
            ends_within(&credential, Duration::from_millis(50)).await,
            None
        );
        token.cancel();
        assert_eq!(
            ends_within(&credential, Duration::from_secs(5)).await,
            Some(Revoked::Token)
        );
        // Expiring in a second, already expired, far out, never.
        let soon = Credential::certificate(unix_now() + 1, "soon".into());
        assert_eq!(
            ends_within(&soon, Duration::from_secs(10)).await,
            Some(Revoked::CertificateExpired("soon".into()))
        );
        let past = Credential::certificate(unix_now() - 1, "past".into());
        assert!(ends_within(&past, Duration::from_secs(5)).await.is_some());
        let later = Credential::certificate(unix_now() + 3600, "later".into());
        assert_eq!(ends_within(&later, Duration::from_millis(50)).await, None);
        let year_9999 = Credential::certificate(253_402_300_799, "9999".into());
        assert_eq!(
            ends_within(&year_9999, Duration::from_millis(50)).await,
            None
        );
        let open = Credential::default();
        assert_eq!(ends_within(&open, Duration::from_millis(50)).await, None);
    }
}
