//! meshdns-cli: what every meshdns process (`meshdns`, `meshdns-syncer`)
//! sets up the same way, so neither `main.rs` repeats it.
//!
//! # Layout
//!
//! - [`credentials`]: how a client (a syncer, a follower, `status`,
//!   `check`) proves who it is to a registry — one `clap` flag group,
//!   flattened into each command, with a `--follow-` prefix where a
//!   server's own TLS flags sit beside it.
//! - [`connections`]: every HTTP listener's connections bounded before
//!   HTTP starts (how many, per client, idle and lifetime).
//! - [`logs`]: `--log-format` text or JSON to stderr, `RUST_LOG` filters.
//! - [`process`]: the async runtime, shutdown on SIGTERM or Ctrl-C, and one
//!   error line (never a backtrace) on failure.
//!
//! Backoff and duration parsing are used by library code (the publisher,
//! the follower, flag parsers), so they live in `meshdns-proto`
//! (`backoff`, `duration`), below this crate.

pub mod connections;
pub mod credentials;
pub mod logs;
pub mod process;

pub use credentials::{ClientFlags, FollowFlags};
