//! Logging: `--log-format` text or JSON to stderr, filtered by `RUST_LOG`.

/// `--log-format` named something other than `text` or `json`.
#[derive(Debug, thiserror::Error)]
#[error("--log-format: {0:?} is not a format (use text or json)")]
pub struct UnknownFormat(pub String);

/// Installs the process's logger: `format` is `text` or `json`; `default`
/// is the level when `RUST_LOG` is not set (`info` for servers, quieter
/// for one-shot commands).
pub fn init(format: &str, default: &str) -> Result<(), UnknownFormat> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "text" => builder.init(),
        "json" => builder.json().init(),
        other => return Err(UnknownFormat(other.to_owned())),
    }
    Ok(())
}
