//! Fuzz target: see `meshdns_tests::fuzz_checks::dns_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshdns_tests::fuzz_checks::dns_request(data);
});
