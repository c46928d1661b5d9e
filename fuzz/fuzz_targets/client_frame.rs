//! See `rangedb::fuzzing::client_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rangedb::fuzzing::client_frame(data));
