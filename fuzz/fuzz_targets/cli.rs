//! See `rangedb::fuzzing::cli`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rangedb::fuzzing::cli(data));
