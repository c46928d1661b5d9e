//! Black-box linearizability per key (Wing & Gong's search with Lowe's memoisation,
//! as in Porcupine), independent of the committed log: only invoke and completion
//! times and outcomes. A write of unknown outcome may or may not have happened (it
//! never completes); failed operations are left out. Bounded: a search that exceeds
//! its step budget is reported as inconclusive, not as a violation.

use std::collections::BTreeMap;

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
    for (key, mut ops) in per_key {
        drop_unobserved_unknown_writes(&mut ops);
        mark_blind_writes(&mut ops);
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

/// Leaves out the writes of unknown outcome whose value (or absence, for a delete) no
/// read of the key observed. Such a write may always be taken as never having
/// happened: in a linearisation that has it, no read falls between it and the next
/// write (a read there would observe its value), so removing it explains every read
/// as well. Kept, each would stay pending to the end and double the states to search.
fn drop_unobserved_unknown_writes(ops: &mut Vec<KeyOp>) {
    let observed: std::collections::BTreeSet<Option<u32>> =
        ops.iter().filter_map(|o| o.observe).collect();
    ops.retain(|o| match o.write {
        Some(value) if o.complete == u64::MAX => observed.contains(&value),
        _ => true,
    });
}

/// The value of every blind write: one no interned value takes.
const BLIND: Option<u32> = Some(u32::MAX);

/// Gives every write whose value (or absence, for a delete) no read observed the one
/// value `BLIND`. Nothing can tell such writes apart (no read sees their values), and
/// with one value, taking a candidate blind write while the state is already blind
/// changes nothing, so `candidates` takes it without branching. Without this, a key
/// written in bursts by several clients and rarely read searched every order of its
/// concurrent writes and ran out of steps (two keys in thirty seeds, 300,000 steps
/// each: most of the checker's time).
fn mark_blind_writes(ops: &mut [KeyOp]) {
    let observed: std::collections::BTreeSet<Option<u32>> =
        ops.iter().filter_map(|o| o.observe).collect();
    for op in ops.iter_mut() {
        if let Some(value) = op.write {
            if !observed.contains(&value) {
                op.write = Some(BLIND);
            }
        }
    }
}

/// splitmix64's finaliser: a well-mixed 64-bit value from any input.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 128-bit Zobrist key for `n`: the fingerprint of a (done set, state) pair is the
/// XOR of its members' keys, updated in O(1) as an operation is linearised.
fn zobrist(n: u64) -> u128 {
    (u128::from(mix(n)) << 64) | u128::from(mix(n ^ 0x5851_f42d_4c95_7f2d))
}

/// The state's key: apart from every operation's (`0..n`).
fn state_key(state: Option<u32>) -> u128 {
    zobrist(state.map_or(1 << 40, |v| (1 << 41) + u64::from(v)))
}

/// Hashes a fingerprint by its low 64 bits: they are already uniformly mixed.
#[derive(Default)]
struct Low64(u64);

impl std::hash::Hasher for Low64 {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// The visited fingerprints. A hash set, not the B-tree the rest of the simulator
/// uses for determinism: it is only ever probed, never iterated, so its order cannot
/// leak into a run (a B-tree here was a third of the sweep's time).
#[allow(clippy::disallowed_types)]
type Memo = std::collections::HashSet<u128, std::hash::BuildHasherDefault<Low64>>;

/// Some(linearizable) or None when the step budget ran out.
///
/// Depth-first over one done set, set and unset in place (Porcupine's lift and
/// unlift, no copy per candidate). The memo of visited (done set, state) pairs
/// (Lowe's) holds their 128-bit Zobrist fingerprints: no allocation or vector
/// comparison per candidate (this search was a third of a sweep's time). Two distinct
/// pairs share a fingerprint with probability 2^-128 per pair; the worst a collision
/// could do is skip a branch and report a violation, never hide one.
fn search(ops: &[KeyOp]) -> Option<bool> {
    let n = ops.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|i| (ops[*i].invoke, ops[*i].complete));
    let ops: Vec<KeyOp> = order.iter().map(|i| ops[*i].clone()).collect();
    let keys: Vec<u128> = (0..n as u64).map(zobrist).collect();
    let mut memo = Memo::default();
    let mut done = vec![0u64; n.div_ceil(64).max(1)];
    let mut done_key: u128 = 0;
    // Completed operations not linearised yet: the search succeeds at 0.
    let mut remaining = ops.iter().filter(|o| o.complete != u64::MAX).count();
    // The path: per level, the operations that may go next there, the position of
    // the one tried, and the state there.
    let mut path: Vec<(Vec<usize>, usize, Option<u32>)> = Vec::new();
    let mut steps = 1u64;
    path.push((candidates(&ops, &done, None), 0, None));
    loop {
        if remaining == 0 {
            return Some(true);
        }
        let Some((options, at, before)) = path.last_mut() else {
            return Some(false);
        };
        let Some(&i) = options.get(*at) else {
            // Every option here explored: undo the move that led here.
            path.pop();
            if let Some((options, at, _)) = path.last_mut() {
                let i = options[*at];
                done[i / 64] &= !(1 << (i % 64));
                done_key ^= keys[i];
                remaining += usize::from(ops[i].complete != u64::MAX);
                *at += 1;
            }
            continue;
        };
        let next_state = match (&ops[i].write, &ops[i].observe) {
            (Some(value), _) => *value,
            (None, Some(seen)) if *seen != *before => {
                *at += 1;
                continue;
            }
            _ => *before,
        };
        if !memo.insert(done_key ^ keys[i] ^ state_key(next_state)) {
            *at += 1;
            continue;
        }
        steps += 1;
        if steps > STEPS_MAX {
            return None;
        }
        done[i / 64] |= 1 << (i % 64);
        done_key ^= keys[i];
        remaining -= usize::from(ops[i].complete != u64::MAX);
        path.push((candidates(&ops, &done, next_state), 0, next_state));
    }
}

/// The pending operations that may be linearised next, in invoke order: those
/// invoked before the earliest completion among pending ones. In invoke order, an
/// op invoked after the least completion seen so far can neither go next nor
/// complete earlier, so the scan stops there.
///
/// A read among them that observes `state` is the only choice: taking it now loses
/// no linearisation (it changes no state, every op still pending may follow it, and
/// an op that must follow it must follow it anyway), so no other branch is tried.
/// So is a blind write while the state is blind: in any linearisation that takes it
/// later, the op after it there is a write (no read observes a blind state), so taking
/// it now changes no state anything observes.
fn candidates(ops: &[KeyOp], done: &[u64], state: Option<u32>) -> Vec<usize> {
    let is_done = |i: usize| done[i / 64] >> (i % 64) & 1 == 1;
    // Operations before `lo` are all linearised.
    let lo = done
        .iter()
        .position(|w| *w != u64::MAX)
        .map_or(ops.len(), |k| k * 64 + (!done[k]).trailing_zeros() as usize);
    let (mut horizon, mut end) = (u64::MAX, lo);
    for (i, op) in ops.iter().enumerate().skip(lo) {
        if op.invoke > horizon {
            break;
        }
        end = i + 1;
        if !is_done(i) {
            horizon = horizon.min(op.complete);
        }
    }
    let next: Vec<usize> =
        (lo..end.min(ops.len())).filter(|&i| !is_done(i) && ops[i].invoke <= horizon).collect();
    let read_now = next.iter().copied().find(|&i| match ops[i].write {
        None => ops[i].observe.is_none_or(|seen| seen == state),
        Some(value) => value == BLIND && state == BLIND,
    });
    match read_now {
        Some(read) => vec![read],
        None => next,
    }
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
