//! Every input kept in fuzz/corpus/ (seeds, interesting inputs the fuzzer
//! found, and any crash turned regression) replayed through the same checks
//! the fuzz targets run: the normal suite keeps them passing without a
//! fuzzing engine.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{} fails its check", path.display());
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus");
    n
}

#[test]
fn dns_request_corpus() {
    replay("dns_request", meshdns_tests::fuzz_checks::dns_request);
}

#[test]
fn export_message_corpus() {
    replay("export_message", meshdns_tests::fuzz_checks::export_message);
}

#[test]
fn file_source_corpus() {
    replay("file_source", meshdns_tests::fuzz_checks::file_source);
}
