//! Fuzz target: see `meshdns_tests::fuzz_checks::export_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshdns_tests::fuzz_checks::export_message(data);
});
