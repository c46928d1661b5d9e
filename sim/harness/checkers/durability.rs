//! Durability: nothing acknowledged is lost. Every acknowledged write is in the final
//! committed log at its revision, and after healing every replica's local state of
//! each key equals the replayed model's latest version.

use super::super::history::{Finals, Op, Outcome};
use super::witness::{range_of, Model};
use super::Violation;

/// `finals[node][key]`: the node's local (value, revision) after convergence.
pub fn check(model: &Model, history: &[Op], finals: &Finals, voters: usize) -> Vec<Violation> {
    let mut violations = Vec::new();
    for op in history {
        let (Outcome::Put { .. } | Outcome::Delete { .. }) = op.outcome else { continue };
        let Some(seq) = op.seq() else { continue };
        let place = model.effective.get(&(op.client, seq));
        if place.is_none_or(|(range, _)| *range != range_of(op.key(), voters)) {
            violations.push(Violation {
                checker: "durability",
                message: "an acknowledged write is missing from the committed log".into(),
                evidence: vec![op.to_string()],
                focus: Some((op.key().to_vec(), op.invoke_ms, op.complete_ms)),
            });
        }
    }
    for (node, state) in finals {
        for (key, found) in state {
            let expected = model
                .versions
                .get(key)
                .and_then(|v| v.last())
                .and_then(|v| v.value.as_ref().map(|value| (value.clone(), v.revision)));
            if *found != expected {
                violations.push(Violation {
                    checker: "durability",
                    message: format!(
                        "after healing, n{} has {} = {:?}; the committed log says {:?}",
                        node + 1,
                        String::from_utf8_lossy(key),
                        found.as_ref().map(|(v, r)| (String::from_utf8_lossy(v).to_string(), *r)),
                        expected
                            .as_ref()
                            .map(|(v, r)| (String::from_utf8_lossy(v).to_string(), *r)),
                    ),
                    evidence: vec![],
                    focus: None,
                });
            }
        }
    }
    violations.truncate(5);
    violations
}
