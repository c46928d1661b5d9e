//! See `rangedb::fuzzing::peer_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rangedb::fuzzing::peer_frame(data));
