//! The command-line readers of a registry (`meshdns status`, `meshdns
//! drill`): connecting with the client flags, every failure named after
//! `--registry`.

use meshdns_proto::client::Client;

use crate::error::Error;

/// Connects to `registry` (a URL, or `HOST:PORT`: `https://` when a CA is
/// given) with `flags`; returns the URL as completed and the client.
pub async fn connect(
    flags: &meshdns_cli::ClientFlags,
    registry: &str,
) -> Result<(String, Client), Error> {
    let auth = flags.auth();
    let url = auth
        .url(registry)
        .map_err(|e| Error::config("--registry", e.to_string()))?;
    let client = auth
        .connect(&url)
        .await
        .map_err(|e| Error::config("--registry", e.to_string()))?;
    Ok((url, client))
}

/// A failed call to the registry at `url`, as an error naming `--registry`.
pub fn call_failed(url: &str) -> impl Fn(tonic::Status) -> Error + Copy + '_ {
    move |e| Error::config("--registry", format!("{url}: {}", e.message()))
}
