//! Majority arithmetic over the voters: the index a quorum has reached, and vote
//! tallies. Inputs are given in voter order (BTreeMap/BTreeSet), so results are
//! deterministic.

use std::collections::{BTreeMap, BTreeSet};

use super::message::NodeId;

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Pending,
    Won,
    Lost,
}

/// How many voters make a majority of `voter_count`.
pub fn majority(voter_count: usize) -> usize {
    voter_count / 2 + 1
}

/// The largest value at least a majority of `values` (one per voter) reach.
/// `None` sorts lowest and means "never"; it is returned when no majority exists.
///
/// # Panics
/// If `values` is empty.
pub fn quorum_value<T: Ord + Copy>(mut values: Vec<Option<T>>) -> Option<T> {
    assert!(!values.is_empty(), "quorum of no voters");
    let need = majority(values.len());
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[need - 1]
}

/// Tallies `votes` (granted or rejected) among `voters`.
pub fn vote_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let need = majority(voters.len());
    let granted = voters.iter().filter(|v| votes.get(v) == Some(&true)).count();
    let rejected = voters.iter().filter(|v| votes.get(v) == Some(&false)).count();
    if granted >= need {
        VoteResult::Won
    } else if voters.len() - rejected < need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_value_takes_majority_th_largest() {
        assert_eq!(quorum_value(vec![Some(5)]), Some(5));
        assert_eq!(quorum_value(vec![Some(5), Some(1), Some(3)]), Some(3));
        assert_eq!(quorum_value(vec![Some(5), None, None]), None);
        assert_eq!(quorum_value(vec![Some(4), Some(4), Some(1), Some(9)]), Some(4));
    }

    #[test]
    fn votes_win_lose_or_pend() {
        let voters: BTreeSet<NodeId> = [1, 2, 3].into_iter().map(NodeId).collect();
        let mut votes = BTreeMap::new();
        votes.insert(NodeId(1), true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(NodeId(2), false);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(NodeId(3), false);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Lost);
        votes.insert(NodeId(3), true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Won);
    }
}
