//! Connecting to a registry as a client (syncers, followers, `status`):
//! TLS with an optional client certificate (mTLS), and/or a bearer token.
//! Plaintext only when the caller was explicitly told `--insecure`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::ClientError;
use crate::wire::registry_client::RegistryClient;

/// HTTP/2 PING interval on a registry connection, idle or not: a
/// registry that stops answering (frozen, partitioned) is noticed in
/// `KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT` and the client reconnects.
/// The same as `meshdns serve`'s `--grpc-keepalive` default.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long the registry has to answer a PING.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a client proves who it is and checks the registry.
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    /// CA that signed the registry's certificate (enables TLS).
    pub ca: Option<PathBuf>,
    /// This client's certificate and key, for mTLS.
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
    /// A file holding a bearer token.
    pub token_file: Option<PathBuf>,
    /// Plaintext allowed (`--insecure`).
    pub insecure: bool,
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A registry client with this crate's authentication.
pub type Client = RegistryClient<InterceptedService<Channel, Bearer>>;

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

impl ClientAuth {
    /// Checks a registry URL against these settings: `https://` needs a
    /// CA, `http://` needs `--insecure`. Bare `host:port` picks by TLS.
    pub fn url(&self, url: &str) -> Result<String, ClientError> {
        let url = if url.contains("://") {
            url.to_owned()
        } else if self.ca.is_some() {
            format!("https://{url}")
        } else {
            format!("http://{url}")
        };
        if url.starts_with("https://") {
            if self.ca.is_none() {
                return Err(ClientError::TlsNeedsCa { url });
            }
        } else if url.starts_with("http://") {
            if !self.insecure {
                return Err(ClientError::Plaintext { url });
            }
        } else {
            return Err(ClientError::Scheme { url });
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(ClientError::CertWithoutKey);
        }
        Ok(url)
    }

    /// The endpoint and token for `url` (already checked by [`Self::url`]).
    pub fn endpoint(&self, url: &str) -> Result<(Endpoint, Bearer), ClientError> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|source| ClientError::Url {
                url: url.to_owned(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_keepalive(Some(KEEPALIVE_INTERVAL));
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?));
            }
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls = tls.identity(Identity::from_pem(
                    read("--tls-cert", cert)?,
                    read("--tls-key", key)?,
                ));
            }
            endpoint = endpoint.tls_config(tls).map_err(ClientError::Tls)?;
        }
        let token = match &self.token_file {
            None => None,
            Some(path) => {
                let text = String::from_utf8(read("--token-file", path)?)
                    .map_err(|_| ClientError::TokenNotUtf8)?;
                let value = format!("Bearer {}", text.trim());
                Some(value.parse().map_err(|_| ClientError::TokenNotHeader)?)
            }
        };
        Ok((endpoint, Bearer(token)))
    }

    /// Connects to `url`.
    pub async fn connect(&self, url: &str) -> Result<Client, ClientError> {
        let (endpoint, bearer) = self.endpoint(url)?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                url: url.to_owned(),
                source,
            })?;
        Ok(RegistryClient::with_interceptor(channel, bearer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an operator must fix is not retryable, and says which flag.
    #[test]
    fn settings_and_credential_files_are_not_retryable() {
        let plaintext = ClientAuth::default().url("http://127.0.0.1:7443");
        let e = plaintext.unwrap_err();
        assert!(matches!(e, ClientError::Plaintext { .. }), "{e}");
        assert!(!e.is_retryable());
        let auth = ClientAuth {
            ca: Some("/nonexistent/meshdns-ca.crt".into()),
            ..ClientAuth::default()
        };
        let e = auth.endpoint("https://127.0.0.1:7443").unwrap_err();
        assert!(e.to_string().starts_with("--tls-ca: cannot read"), "{e}");
        assert!(!e.is_retryable());
        let half = ClientAuth {
            ca: Some("ca.crt".into()),
            cert: Some("c.crt".into()),
            ..ClientAuth::default()
        };
        assert!(matches!(
            half.url("https://127.0.0.1:7443"),
            Err(ClientError::CertWithoutKey)
        ));
    }
}
