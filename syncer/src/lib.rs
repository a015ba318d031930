//! meshdns-syncer: exports one cluster's services to every registry.
//!
//! # Layout
//!
//! - [`config`]: flags (`--cluster`, `--registry`, `--source`, ...).
//! - [`source`]: where exports come from; each source turns its input into
//!   a [`meshdns_proto::model::ExportSet`] and publishes it on a
//!   `watch` channel (which coalesces bursts by construction).
//!   [`source::file`] reads the YAML file format.
//! - [`publish`]: one task per registry: Hello and Snapshot on every
//!   (re)connect, Deltas after, Heartbeats, backoff with jitter.
//! - [`error`]: the crate's error type.

pub mod config;
pub mod error;
pub mod publish;
pub mod source;

pub use error::Error;

use tokio_util::sync::CancellationToken;

use crate::config::{SourceKind, SyncerArgs};

/// Runs a syncer until `shutdown`: its source, and one publisher per registry.
pub async fn run(args: SyncerArgs, shutdown: CancellationToken) -> Result<(), Error> {
    let publishers = args.publishers()?;
    let exports = match args.source_kind()? {
        SourceKind::File(path) => source::file::follow(
            path,
            args.overrides(),
            args.file_poll_interval,
            shutdown.clone(),
        ),
        SourceKind::Kubernetes => {
            return Err(Error::Config {
                field: "--source".into(),
                problem: "the kubernetes source is not in this build yet; use --source file:PATH"
                    .into(),
            });
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for config in publishers {
        tasks.spawn(publish::run(config, exports.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}
