//! The end-to-end suite: real servers, syncers, resolvers and DNS clients
//! on loopback. One test binary (one link of the whole dependency tree)
//! with a module per subject; nextest still runs every test in its own
//! process.

#![allow(clippy::unwrap_used, clippy::err_expect)]

mod answer_policy;
mod budget;
mod check;
mod credentials;
mod dns_abuse;
mod dns_edge;
mod dns_rules;
mod drill;
mod edge;
mod export;
mod faults;
mod fleet_file;
mod follower;
mod fuzz_corpus;
mod hostile;
mod hostile_member;
mod kube_strict;
mod kubernetes;
mod limits;
mod locality;
mod mcs_status;
mod monitoring;
mod partition;
mod parts;
mod policy;
mod process;
mod resolvers;
mod restart;
mod security;
mod slow_member;
mod soak;
mod sync;
mod syncer_policy;
mod tls_rotation;
mod vms;
