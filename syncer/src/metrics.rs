//! The syncer's `/metrics` (Prometheus text): what it exports, its
//! version, and when its client certificate expires. Everything is read at
//! scrape time from the export channel and the certificate file, so
//! nothing is counted on the publish path and a rotated certificate shows
//! without a restart.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `meshdns_build_info` | gauge (1) | `version` |
//! | `meshdns_tls_certificate_expiry_timestamp_seconds` | gauge, Unix time | `certificate="client"` (`--tls-cert`) |
//! | `meshdns_syncer_exported_services` | gauge | — |
//! | `meshdns_syncer_exported_endpoints` | gauge | — |

use std::fmt::Write;
use std::path::PathBuf;

use crate::source::Exports;

/// What `/metrics` reads.
#[derive(Debug, Clone)]
pub struct SyncerMetrics {
    exports: Exports,
    /// `--tls-cert`, if the syncer presents a client certificate.
    client_cert: Option<PathBuf>,
}

impl SyncerMetrics {
    pub fn new(exports: Exports, client_cert: Option<PathBuf>) -> Self {
        SyncerMetrics {
            exports,
            client_cert,
        }
    }

    /// The Prometheus text exposition, read now.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        gauge_header(out, "meshdns_build_info", "The running version (value 1)")?;
        writeln!(
            out,
            "meshdns_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )?;
        if let Some(path) = &self.client_cert {
            match meshdns_proto::certificate::file_not_after(path) {
                Ok(not_after) => {
                    gauge_header(
                        out,
                        "meshdns_tls_certificate_expiry_timestamp_seconds",
                        "notAfter of a TLS certificate this process uses, as a Unix time (certificate: client)",
                    )?;
                    writeln!(
                        out,
                        "meshdns_tls_certificate_expiry_timestamp_seconds{{certificate=\"client\"}} {not_after}"
                    )?;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "client certificate expiry unreadable");
                }
            }
        }
        let (services, endpoints) = match self.exports.borrow().as_ref() {
            Some(set) => (
                set.services.len(),
                set.services
                    .values()
                    .map(|s| s.endpoints().len())
                    .sum::<usize>(),
            ),
            None => (0, 0),
        };
        gauge_header(
            out,
            "meshdns_syncer_exported_services",
            "Services in the export set the syncer streams (0 before the source's first state)",
        )?;
        writeln!(out, "meshdns_syncer_exported_services {services}")?;
        gauge_header(
            out,
            "meshdns_syncer_exported_endpoints",
            "Endpoints of those services",
        )?;
        writeln!(out, "meshdns_syncer_exported_endpoints {endpoints}")?;
        Ok(())
    }
}

fn gauge_header(out: &mut String, name: &str, help: &str) -> std::fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} gauge")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_before_the_first_state() {
        let (_tx, rx) = tokio::sync::watch::channel(None);
        let text = SyncerMetrics::new(rx, None).render();
        assert!(
            text.contains("meshdns_syncer_exported_services 0\n"),
            "{text}"
        );
        assert!(text.contains("meshdns_build_info{version=\""), "{text}");
        assert!(!text.contains("expiry"), "{text}");
    }
}
