//! See `rangedb::fuzzing::snapshot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rangedb::fuzzing::snapshot(data));
