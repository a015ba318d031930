//! The meshdns contract: the `meshdns.v1` gRPC protocol and the validated
//! domain model every other crate works with.
//!
//! # Layout
//!
//! - [`wire`]: the code prost and tonic generate from
//!   `proto/meshdns/v1/registry.proto`. Only this crate names its types in
//!   conversions; the others go through [`model`].
//! - [`model`]: the domain types (cluster, service key, ports, endpoints,
//!   mode, policy), each built only through a validating constructor.
//! - [`convert`]: `TryFrom<wire::X> for model::X` (precise errors) and
//!   `From<&model::X> for wire::X`.
//! - [`duration`]: the `500ms` / `15s` / `10m` syntax of every duration flag.
//! - [`client`]: connecting to a registry: TLS, mTLS, bearer token.
//! - [`budget`]: what an Export message costs decoded, from its wire bytes.
//! - [`codec`]: the generated services' codec: prost with small starting
//!   buffers, for registries holding a thousand idle streams.
//! - [`parts`]: splitting a message's items into parts under a byte budget.
//! - [`certificate`]: a PEM certificate's notAfter, for expiry gauges and checks.
//! - [`error`]: [`InvalidField`], and [`ClientError`] for registry clients.
//! - [`backoff`]: reconnect delays for a registry's clients.
//! - `fixtures` (feature `fixtures`, tests and benches only): the keys,
//!   ports, endpoints and exports tests build, written once.
//!
//! **Invariant:** a value of a model type is valid: names are RFC 1123
//! labels, addresses parse, ports are non-zero, no duplicate endpoint.

// Every public item documented (the generated `wire` module excepted).
#![warn(missing_docs)]

pub mod backoff;
pub mod budget;
pub mod certificate;
pub mod client;
pub mod codec;
pub mod convert;
pub mod duration;
pub mod error;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod model;
pub mod parts;
pub mod token_digest;

/// Generated protocol code (package `meshdns.v1`).
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod wire {
    tonic::include_proto!("meshdns.v1");
}

pub use error::{ClientError, InvalidField};
