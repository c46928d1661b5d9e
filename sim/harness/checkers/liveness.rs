//! Liveness after healing: every fault off, every node up and no more crashes. Within
//! the bound, every range has a leader, every data range commits a write, and every
//! replica of every range reaches the same applied index (then durability compares
//! their contents).

use super::Violation;

pub fn violation(message: String, evidence: Vec<String>) -> Violation {
    Violation { checker: "liveness", message, evidence, focus: None }
}
