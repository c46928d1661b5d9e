//! Elle's list-append checker (Kingsbury and Alvaro, "Elle: Inferring Isolation
//! Anomalies from Experimental Observations", VLDB 2020), for the transactions of
//! `lists.rs`.
//!
//! Appends of unique numbers make every version of a list name its writer, so the
//! version order of each key is the final list (every list read must be a prefix of
//! it), and the dependencies between transactions follow:
//!
//! ```text
//!  ww  T1 appended v(i), T2 appended v(i+1)
//!  wr  T1 appended v(i), T2 read a list ending in v(i)
//!  rw  T1 read a list of length i, T2 appended v(i+1)   (anti-dependency)
//!  rt  T1 committed before T2 began                      (real time: strictness)
//! ```
//!
//! A cycle is an anomaly, named by the edges it needs: G0 (ww only), G1c (ww and wr),
//! G-single (one rw), G2 (more rw), or a real-time violation (only with rt edges: the
//! history is serializable but not strictly). Also: G1a (a committed transaction read
//! an element of one that did not commit), G1b (it read a writer's intermediate
//! version), a committed append missing from the final state, a failed one present, an
//! unknown transaction half present (atomicity), and a read that is no prefix of the
//! final list.

use std::collections::{BTreeMap, BTreeSet};

use super::Violation;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListOp {
    Append { key: Vec<u8>, value: u64 },
    Read { key: Vec<u8>, list: Vec<u64> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    Committed,
    /// Definitely not committed.
    Aborted,
    Unknown,
}

#[derive(Clone, Debug)]
pub struct ListTxn {
    pub client: u64,
    pub invoke: u64,
    pub complete: u64,
    pub outcome: TxnOutcome,
    pub ops: Vec<ListOp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Edge {
    Ww,
    Wr,
    Rw,
    Rt,
}

fn describe(txn: &ListTxn, index: usize) -> String {
    let ops: Vec<String> = txn
        .ops
        .iter()
        .map(|op| match op {
            ListOp::Append { key, value } => {
                format!("append {} {value}", String::from_utf8_lossy(key))
            }
            ListOp::Read { key, list } => format!("read {} {list:?}", String::from_utf8_lossy(key)),
        })
        .collect();
    format!(
        "T{index} client {} {}..{} ms {:?}: {}",
        txn.client,
        txn.invoke,
        txn.complete,
        txn.outcome,
        ops.join("; ")
    )
}

fn violation(message: String, evidence: Vec<String>) -> Violation {
    Violation { checker: "elle", message, evidence, focus: None }
}

/// Checks the list transactions against the final lists.
pub fn check(txns: &[ListTxn], finals: &BTreeMap<Vec<u8>, Vec<u64>>) -> Vec<Violation> {
    let mut violations = Vec::new();
    // Who appended each element.
    let mut writer: BTreeMap<(Vec<u8>, u64), usize> = BTreeMap::new();
    for (i, txn) in txns.iter().enumerate() {
        for op in &txn.ops {
            if let ListOp::Append { key, value } = op {
                writer.insert((key.clone(), *value), i);
            }
        }
    }
    let visible =
        |key: &Vec<u8>, value: u64| finals.get(key).is_some_and(|list| list.contains(&value));
    // Version orders: the final lists; every committed read a prefix of them.
    for (key, list) in finals {
        let unique: BTreeSet<&u64> = list.iter().collect();
        if unique.len() != list.len() {
            violations.push(violation(
                format!("{} holds an element twice: {list:?}", String::from_utf8_lossy(key)),
                vec![],
            ));
        }
    }
    for (i, txn) in txns.iter().enumerate() {
        let appends: Vec<(&Vec<u8>, u64)> = txn
            .ops
            .iter()
            .filter_map(|op| match op {
                ListOp::Append { key, value } => Some((key, *value)),
                ListOp::Read { .. } => None,
            })
            .collect();
        let present = appends.iter().filter(|(key, value)| visible(key, *value)).count();
        let problem = match txn.outcome {
            TxnOutcome::Committed if present < appends.len() => {
                Some("a committed transaction's append is missing from the final state")
            }
            TxnOutcome::Aborted if present > 0 => {
                Some("a transaction reported as not committed has an append in the final state")
            }
            TxnOutcome::Unknown if present > 0 && present < appends.len() => {
                Some("a transaction is half applied (some appends in the final state, not all)")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            violations.push(violation(problem.into(), vec![describe(txn, i)]));
        }
        if txn.outcome != TxnOutcome::Committed {
            continue;
        }
        for op in &txn.ops {
            let ListOp::Read { key, list } = op else { continue };
            let order = finals.get(key).map(Vec::as_slice).unwrap_or(&[]);
            if list.len() > order.len() || order[..list.len()] != list[..] {
                violations.push(violation(
                    format!(
                        "a committed read of {} is no prefix of its final list {order:?}",
                        String::from_utf8_lossy(key)
                    ),
                    vec![describe(txn, i)],
                ));
                continue;
            }
            for value in list {
                if let Some(&w) = writer.get(&(key.clone(), *value)) {
                    if txns[w].outcome == TxnOutcome::Aborted {
                        violations.push(violation(
                            "G1a: a committed transaction read an element of one that did not commit".into(),
                            vec![describe(txn, i), describe(&txns[w], w)],
                        ));
                    }
                }
            }
            // G1b: the last element read is not its writer's last append to the key.
            if let Some(last) = list.last() {
                if let Some(&w) = writer.get(&(key.clone(), *last)) {
                    let later = txns[w].ops.iter().skip_while(|op| {
                        !matches!(op, ListOp::Append { key: k, value } if k == key && value == last)
                    });
                    let more = later
                        .skip(1)
                        .any(|op| matches!(op, ListOp::Append { key: k, .. } if k == key));
                    if more && w != i {
                        violations.push(violation(
                            "G1b: a committed transaction read another's intermediate version"
                                .into(),
                            vec![describe(txn, i), describe(&txns[w], w)],
                        ));
                    }
                }
            }
        }
    }
    if !violations.is_empty() {
        violations.truncate(5);
        return violations;
    }
    // The graph over committed transactions and unknown ones that took effect.
    let member = |i: usize| {
        let txn = &txns[i];
        match txn.outcome {
            TxnOutcome::Committed => true,
            TxnOutcome::Unknown => txn
                .ops
                .iter()
                .any(|op| matches!(op, ListOp::Append { key, value } if visible(key, *value))),
            TxnOutcome::Aborted => false,
        }
    };
    let mut edges: BTreeMap<usize, BTreeMap<usize, Edge>> = BTreeMap::new();
    let mut add = |from: usize, to: usize, kind: Edge| {
        if from != to {
            let slot = edges.entry(from).or_default().entry(to).or_insert(kind);
            *slot = (*slot).min(kind);
        }
    };
    for (key, order) in finals {
        let writer_of = |position: usize| writer.get(&(key.clone(), order[position])).copied();
        for position in 1..order.len() {
            if let (Some(a), Some(b)) = (writer_of(position - 1), writer_of(position)) {
                add(a, b, Edge::Ww);
            }
        }
        for (i, txn) in txns.iter().enumerate() {
            if txn.outcome != TxnOutcome::Committed {
                continue;
            }
            for op in &txn.ops {
                let ListOp::Read { key: read_key, list } = op else { continue };
                if read_key != key {
                    continue;
                }
                if let Some(w) = list.len().checked_sub(1).and_then(writer_of) {
                    add(w, i, Edge::Wr);
                }
                if list.len() < order.len() {
                    if let Some(w) = writer_of(list.len()) {
                        add(i, w, Edge::Rw);
                    }
                }
            }
        }
    }
    let committed: Vec<usize> =
        (0..txns.len()).filter(|i| txns[*i].outcome == TxnOutcome::Committed).collect();
    for &a in &committed {
        for &b in &committed {
            if txns[a].complete < txns[b].invoke {
                add(a, b, Edge::Rt);
            }
        }
    }
    let nodes: Vec<usize> = (0..txns.len()).filter(|i| member(*i)).collect();
    // Each class: the edges it may use; the first class with a cycle names it.
    let classes: [(&str, &[Edge]); 4] = [
        ("G0 (write cycle)", &[Edge::Ww]),
        ("G1c (circular information flow)", &[Edge::Ww, Edge::Wr]),
        (
            "G-single or G2 (anti-dependency cycle: not serializable)",
            &[Edge::Ww, Edge::Wr, Edge::Rw],
        ),
        (
            "real-time order violated (serializable, not strictly)",
            &[Edge::Ww, Edge::Wr, Edge::Rw, Edge::Rt],
        ),
    ];
    for (name, allowed) in classes {
        if let Some(cycle) = find_cycle(&nodes, &edges, allowed) {
            let rw = cycle.windows(2).filter(|pair| edges[&pair[0]][&pair[1]] == Edge::Rw).count();
            let name = match (name.starts_with("G-single"), rw) {
                (true, 1) => "G-single (one anti-dependency in the cycle: not serializable)",
                (true, _) => "G2 (anti-dependency cycle: not serializable)",
                _ => name,
            };
            let mut evidence = Vec::new();
            for pair in cycle.windows(2) {
                evidence.push(format!(
                    "{}  -{:?}->",
                    describe(&txns[pair[0]], pair[0]),
                    edges[&pair[0]][&pair[1]]
                ));
            }
            return vec![violation(
                format!("{name}: a cycle of {} transactions", cycle.len() - 1),
                evidence,
            )];
        }
    }
    Vec::new()
}

/// A cycle (first node repeated at the end) through edges of the `allowed` kinds.
fn find_cycle(
    nodes: &[usize],
    edges: &BTreeMap<usize, BTreeMap<usize, Edge>>,
    allowed: &[Edge],
) -> Option<Vec<usize>> {
    // Iterative DFS with colours; the path is the grey stack.
    let mut colour: BTreeMap<usize, u8> = BTreeMap::new();
    for &root in nodes {
        if colour.contains_key(&root) {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>)> = Vec::new();
        let next = |n: usize| -> Vec<usize> {
            edges
                .get(&n)
                .map(|out| {
                    out.iter()
                        .filter(|(_, kind)| allowed.contains(kind))
                        .map(|(to, _)| *to)
                        .collect()
                })
                .unwrap_or_default()
        };
        colour.insert(root, 1);
        stack.push((root, next(root)));
        while let Some((node, pending)) = stack.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(to) => match colour.get(&to) {
                    Some(1) => {
                        let from = stack
                            .iter()
                            .position(|(n, _)| *n == to)
                            .expect("grey nodes are on the stack");
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(n, _)| *n).collect();
                        cycle.push(to);
                        return Some(cycle);
                    }
                    Some(_) => {}
                    None => {
                        colour.insert(to, 1);
                        let out = next(to);
                        stack.push((to, out));
                    }
                },
                None => {
                    colour.insert(node, 2);
                    stack.pop();
                }
            }
        }
    }
    None
}

// Run by `cargo sim --test sim_tools` (the sim target has no test harness).
#[cfg(test)]
#[allow(dead_code)]
mod tests {
    use super::*;

    fn txn(invoke: u64, complete: u64, ops: Vec<ListOp>) -> ListTxn {
        ListTxn { client: 1, invoke, complete, outcome: TxnOutcome::Committed, ops }
    }
    fn append(key: &str, value: u64) -> ListOp {
        ListOp::Append { key: key.into(), value }
    }
    fn read(key: &str, list: &[u64]) -> ListOp {
        ListOp::Read { key: key.into(), list: list.to_vec() }
    }

    #[test]
    fn a_serial_history_passes_and_write_skew_is_g2() {
        let finals = BTreeMap::from([(b"x".to_vec(), vec![1]), (b"y".to_vec(), vec![2])]);
        let serial = vec![
            txn(0, 1, vec![read("y", &[]), append("x", 1)]),
            txn(2, 3, vec![read("x", &[1]), append("y", 2)]),
        ];
        assert!(check(&serial, &finals).is_empty());
        // Write skew: each read the other's key empty, then appended.
        let skew = vec![
            txn(0, 3, vec![read("y", &[]), append("x", 1)]),
            txn(0, 3, vec![read("x", &[]), append("y", 2)]),
        ];
        let found = check(&skew, &finals);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.starts_with("G2"), "{}", found[0].message);
    }

    #[test]
    fn stale_read_after_a_commit_is_a_real_time_violation() {
        let finals = BTreeMap::from([(b"x".to_vec(), vec![1])]);
        // T1 appended and committed at 1; T2 began at 2 and still read x empty.
        let history = vec![txn(0, 1, vec![append("x", 1)]), txn(2, 3, vec![read("x", &[])])];
        let found = check(&history, &finals);
        assert!(found[0].message.starts_with("real-time"), "{}", found[0].message);
    }

    #[test]
    fn aborted_reads_and_lost_appends_are_found() {
        let finals = BTreeMap::from([(b"x".to_vec(), vec![1])]);
        let mut aborted = txn(0, 1, vec![append("x", 1)]);
        aborted.outcome = TxnOutcome::Aborted;
        let history = vec![aborted, txn(2, 3, vec![read("x", &[1])])];
        let found = check(&history, &finals);
        assert!(found.iter().any(|v| v.message.contains("not committed")));
        assert!(found.iter().any(|v| v.message.starts_with("G1a")));
        let lost = vec![txn(0, 1, vec![append("x", 1), append("x", 2)])];
        assert!(check(&lost, &finals)[0].message.contains("missing"));
    }
}
