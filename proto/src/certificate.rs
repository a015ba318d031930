//! When a PEM certificate expires: for the expiry gauges on `/metrics`
//! (the hub's serving certificate, a syncer's client certificate) and for
//! `meshdns check`.

use x509_parser::pem::Pem;

/// The notAfter (Unix seconds) of the first certificate in `pem`: a
/// chain's first is the leaf.
pub fn not_after(pem: &[u8]) -> Result<i64, String> {
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("not PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let cert = block
            .parse_x509()
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        return Ok(cert.validity().not_after.timestamp());
    }
    Err("no CERTIFICATE block".into())
}

/// [`not_after`] of the file at `path`.
pub fn file_not_after(path: &std::path::Path) -> Result<i64, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    not_after(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_certificate() {
        assert!(not_after(b"").is_err());
        assert!(
            not_after(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err()
        );
    }
}
