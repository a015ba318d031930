//! `meshdns-syncer` as a process against a fake API server: the flags
//! every Kubernetes-source test starts it with.

use std::path::Path;

use crate::fake_kube::FakeKube;
use crate::{Proc, logs};

/// A syncer of cluster `cluster` reading `fake` (its kubeconfig written
/// into `dir`), publishing to `registry` in plaintext with a 200 ms
/// heartbeat, then `extra` flags.
#[derive(Debug, Clone, Copy)]
pub struct KubeSyncer<'a> {
    pub fake: &'a FakeKube,
    pub dir: &'a Path,
    pub cluster: &'a str,
    pub registry: &'a str,
}

impl KubeSyncer<'_> {
    fn argv(&self, extra: &[&str]) -> Vec<String> {
        let kubeconfig = self.fake.kubeconfig(self.dir).display().to_string();
        let mut args: Vec<String> = [
            "--insecure",
            "--cluster",
            self.cluster,
            "--registry",
            self.registry,
            "--heartbeat",
            "200ms",
            "--kubeconfig",
            &kubeconfig,
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    }

    /// Starts it, output discarded ([`Proc::start`]).
    pub fn start(&self, extra: &[&str]) -> Proc {
        let args = self.argv(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::start("meshdns-syncer", &args)
    }

    /// Starts it with its log kept ([`Proc::start_logged`]).
    pub fn start_logged(&self, extra: &[&str]) -> (Proc, logs::Logs) {
        let args = self.argv(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::start_logged("meshdns-syncer", &args)
    }
}
