//! Fuzz target: see `meshdns_tests::fuzz_checks::file_source`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshdns_tests::fuzz_checks::file_source(data);
});
