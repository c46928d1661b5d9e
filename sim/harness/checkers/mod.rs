//! One checker per property. `raft_safety` watches the nodes online (through the
//! observer hook); the others judge the recorded client history afterwards.

pub mod durability;
pub mod elle;
pub mod linearizability;
pub mod liveness;
pub mod raft_safety;
pub mod witness;

/// A checker's finding.
#[derive(Clone, Debug)]
pub struct Violation {
    pub checker: &'static str,
    pub message: String,
    /// The smallest part of the history (or of the Raft events) that shows it.
    pub evidence: Vec<String>,
    /// For history violations: the key and the simulated-time window, so that the
    /// report can add the Raft events of that key's range around it.
    pub focus: Option<(Vec<u8>, u64, u64)>,
}
