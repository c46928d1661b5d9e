//! Black-box linearizability per key (Wing & Gong's search with Lowe's memoisation,
//! as in Porcupine), independent of the committed log: only invoke and completion
//! times and outcomes. A write of unknown outcome may or may not have happened (it
//! never completes); failed operations are left out. Bounded: a search that exceeds
//! its step budget is reported as inconclusive, not as a violation.

use std::collections::{BTreeMap, BTreeSet};

use super::super::history::{Call, Op, Outcome};
use super::witness::scan_observations;
use super::Violation;

const STEPS_MAX: u64 = 300_000;

#[derive(Clone, Debug)]
struct KeyOp {
    invoke: u64,
    /// u64::MAX: never completed (unknown outcome).
    complete: u64,
    /// Some(v): writes v (None = delete); for reads, `observe`.
    write: Option<Option<u32>>,
    observe: Option<Option<u32>>,
    /// Index into the history, for the report.
    source: usize,
}

pub struct Summary {
    /// Keys whose search ran out of steps.
    pub inconclusive: usize,
}

pub fn check(history: &[Op]) -> (Vec<Violation>, Summary) {
    let mut values: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    let mut intern = |v: &[u8]| {
        let next = values.len() as u32;
        *values.entry(v.to_vec()).or_insert(next)
    };
    let mut per_key: BTreeMap<Vec<u8>, Vec<KeyOp>> = BTreeMap::new();
    for (source, op) in history.iter().enumerate() {
        let complete = match op.outcome {
            Outcome::Failed(_) => continue,
            Outcome::Unknown(_) => u64::MAX,
            _ => op.complete_ms,
        };
        let base =
            |write, observe| KeyOp { invoke: op.invoke_ms, complete, write, observe, source };
        match (&op.call, &op.outcome) {
            (Call::Put { key, value, .. }, _) => {
                per_key.entry(key.clone()).or_default().push(base(Some(Some(intern(value))), None))
            }
            (Call::Delete { key, .. }, _) => {
                per_key.entry(key.clone()).or_default().push(base(Some(None), None))
            }
            (Call::Get { key, .. }, Outcome::Get(found)) => {
                let seen = found.as_ref().map(|(v, _)| intern(v));
                per_key.entry(key.clone()).or_default().push(base(None, Some(seen)));
            }
            (Call::Scan { start, end }, Outcome::Scan(kvs)) => {
                for (key, found) in scan_observations(start, end, kvs) {
                    let seen = found.as_ref().map(|(v, _)| intern(v));
                    per_key.entry(key).or_default().push(base(None, Some(seen)));
                }
            }
            _ => {}
        }
    }
    let mut violations = Vec::new();
    let mut summary = Summary { inconclusive: 0 };
    for (key, ops) in per_key {
        match search(&ops) {
            Some(true) => {}
            None => summary.inconclusive += 1,
            Some(false) => {
                let minimal = shrink(&ops);
                let mut evidence: Vec<String> =
                    minimal.iter().map(|o| history[o.source].to_string()).collect();
                evidence.dedup();
                violations.push(Violation {
                    checker: "linearizability",
                    message: format!(
                        "history of key {} is not linearizable ({} ops; {} in the smallest failing window)",
                        String::from_utf8_lossy(&key),
                        ops.len(),
                        minimal.len()
                    ),
                    evidence,
                    focus: Some((
                        key.clone(),
                        minimal.iter().map(|o| o.invoke).min().unwrap_or(0),
                        minimal.iter().map(|o| o.complete).filter(|c| *c != u64::MAX).max().unwrap_or(0),
                    )),
                });
            }
        }
    }
    (violations, summary)
}

/// Some(linearizable) or None when the step budget ran out.
fn search(ops: &[KeyOp]) -> Option<bool> {
    let n = ops.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|i| (ops[*i].invoke, ops[*i].complete));
    let ops: Vec<KeyOp> = order.iter().map(|i| ops[*i].clone()).collect();
    let words = n.div_ceil(64).max(1);
    let mut memo: BTreeSet<(Vec<u64>, Option<u32>)> = BTreeSet::new();
    let mut steps = 0u64;
    // Depth-first: (done set, state, next candidate position to try).
    let mut stack: Vec<(Vec<u64>, Option<u32>)> = vec![(vec![0; words], None)];
    let required: Vec<usize> = (0..n).filter(|i| ops[*i].complete != u64::MAX).collect();
    while let Some((done, state)) = stack.pop() {
        steps += 1;
        if steps > STEPS_MAX {
            return None;
        }
        let is_done = |i: usize| done[i / 64] >> (i % 64) & 1 == 1;
        if required.iter().all(|i| is_done(*i)) {
            return Some(true);
        }
        // The earliest completion among pending ops bounds which may go next.
        let horizon =
            (0..n).filter(|i| !is_done(*i)).map(|i| ops[i].complete).min().unwrap_or(u64::MAX);
        for i in (0..n).rev() {
            if is_done(i) || ops[i].invoke > horizon {
                continue;
            }
            let next_state = match (&ops[i].write, &ops[i].observe) {
                (Some(value), _) => *value,
                (None, Some(seen)) => {
                    if *seen != state {
                        continue;
                    }
                    state
                }
                (None, None) => state,
            };
            let mut next_done = done.clone();
            next_done[i / 64] |= 1 << (i % 64);
            if memo.insert((next_done.clone(), next_state)) {
                stack.push((next_done, next_state));
            }
        }
    }
    Some(false)
}

/// A small failing window: greedily drop operations while the rest still fails,
/// never dropping a write whose value a remaining read observed (that would fail for
/// a different reason).
fn shrink(ops: &[KeyOp]) -> Vec<KeyOp> {
    let mut window = ops.to_vec();
    window.sort_by_key(|o| (o.invoke, o.complete));
    let mut i = window.len();
    while i > 0 {
        i -= 1;
        if let Some(Some(value)) = window[i].write {
            if window.iter().any(|o| o.observe == Some(Some(value))) {
                continue;
            }
        }
        let mut without = window.clone();
        without.remove(i);
        if search(&without) == Some(false) {
            window = without;
        }
    }
    window
}
