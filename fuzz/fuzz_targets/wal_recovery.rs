//! See `rangedb::fuzzing::wal_recovery`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rangedb::fuzzing::wal_recovery(data));
