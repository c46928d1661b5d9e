//! The Rust client library. (STUB)
