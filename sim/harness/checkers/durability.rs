//! Durability: nothing acknowledged is lost. Every acknowledged write is in the final
//! committed log at its revision, and after healing every replica's local state of
//! each key equals the replayed model's latest version.

use super::super::history::{Finals, Op, Outcome};
use super::witness::Model;
use super::Violation;

/// `finals[node][key]`: the node's local (value, revision) after convergence, when
/// each range's commit index was `converged_commit[range]`: the model's state is taken
/// at that index (a write committed later, e.g. a client request delivered late, is
/// not in the finals, and rightly so).
pub fn check(
    model: &Model,
    history: &[Op],
    finals: &Finals,
    converged_commit: &std::collections::BTreeMap<u64, u64>,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    for op in history {
        let (Outcome::Put { .. } | Outcome::Delete { .. }) = op.outcome else { continue };
        let Some(seq) = op.seq() else { continue };
        let place = model.effective.get(&(op.client, seq));
        if place.is_none() {
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
            let at = converged_commit.get(&model.range_of(key).0).copied().unwrap_or(u64::MAX);
            let expected = model
                .versions
                .get(key)
                .and_then(|v| v.iter().rev().find(|version| version.revision <= at))
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
