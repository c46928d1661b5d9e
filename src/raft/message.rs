//! Wire-level Raft vocabulary: identifiers, log entries, hard state, snapshots and
//! the messages peers exchange. Everything here is plain data (serde) so the node can
//! frame it for the network and the WAL without knowing Raft's rules.

use serde::{Deserialize, Serialize};

/// A node (a `rangedb server` process) in the cluster. Never 0.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A Raft term.
pub type Term = u64;
/// A Raft log index. Index 0 is the empty prefix before the first entry.
pub type Index = u64;

/// One replicated log entry. `format` says what `data` holds; a leader's no-op entry
/// is `EntryFormat::NOOP` with empty `data`. `data` is a shared buffer: the Ready, the
/// stable log, the WAL record, every Append and the committed entries of one entry
/// all hold the same bytes (a copy per holder was a malloc, a memcpy and a free each,
/// ~10 per entry per node).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub format: EntryFormat,
    #[serde(with = "crate::byte_serde::shared")]
    pub data: bytes::Bytes,
}

/// The type of an entry's `data` and the version of its encoding. Raft stores and
/// replicates entries of every format; the layer that applies an entry refuses a
/// format it cannot read (one written by a newer rangedb) with an error that stops
/// the node cleanly, never by guessing. Each kind versions independently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryFormat {
    pub kind: u8,
    pub version: u8,
}

impl EntryFormat {
    /// A new leader's empty entry: applying it changes nothing but the applied index.
    pub const NOOP: EntryFormat = EntryFormat { kind: 0, version: 1 };
    /// The kind of the state machine's commands (their versions: `range::kv`).
    pub const KIND_COMMAND: u8 = 1;
    /// Membership changes, read by the Raft core itself (membership.rs).
    pub const KIND_CONF_CHANGE: u8 = 2;
    /// A configuration, whole (membership.rs).
    pub const CONF_CHANGE: EntryFormat = EntryFormat { kind: 2, version: 1 };
}

impl Default for EntryFormat {
    fn default() -> Self {
        EntryFormat::NOOP
    }
}

impl std::fmt::Display for EntryFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            0 => "no-op",
            EntryFormat::KIND_COMMAND => "command",
            EntryFormat::KIND_CONF_CHANGE => "membership change",
            _ => "unknown kind",
        };
        write!(f, "{kind} ({}) version {}", self.kind, self.version)
    }
}

/// State that must be durable before any message that depends on it is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: Index,
    /// Nonzero while the replica repairs damaged storage: it lost log entries it may
    /// have acknowledged in terms up to this one, so it neither votes nor campaigns
    /// until its log holds an entry of a later term (see `RaftGroup::repairing`).
    pub repair_term: Term,
}

/// The group's membership. Sorted, no duplicates, no node in both lists. Voters
/// elect and count toward quorums; learners receive the log (and snapshots) and
/// never vote, campaign or count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// Describes the log prefix a snapshot replaces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Last index covered by the snapshot.
    pub index: Index,
    /// Term of the entry at `index`.
    pub term: Term,
    pub conf_state: ConfState,
}

/// A state machine image at `meta.index`. `data` is opaque to Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    #[serde(with = "crate::byte_serde::vec")]
    pub data: Vec<u8>,
}

/// A message between two replicas of the same Raft group. The node wraps it with the
/// range id (see `crate::wire::Envelope`); Raft itself never sees range ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term (for PreVote: the term the sender would campaign in).
    pub term: Term,
    pub body: MessageBody,
}

/// What a message says. The Raft core owns the meaning of each variant; the set may
/// grow (the wire format is versioned by the frame header, not by this enum).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        reject: bool,
    },
    /// `transfer` is set when a leadership transfer asked for this election, so the
    /// voter must not refuse it for having heard from a leader recently.
    Vote {
        last_index: Index,
        last_term: Term,
        transfer: bool,
    },
    VoteResponse {
        reject: bool,
    },
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// `index`: on success the last index now matching the leader; on reject the
    /// `prev_index` that did not match. `hint_index`/`hint_term` drive fast backtracking.
    AppendResponse {
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    },
    /// `context` is a read-index round (0 when none); `commit` is min(leader commit,
    /// follower match).
    Heartbeat {
        commit: Index,
        context: u64,
    },
    /// `tick`: the follower's tick counter (ticks since it started) and
    /// `incarnation`: which run of it counted them; the leader measures the
    /// follower's tick rate from them for the lease drift guard (tick_rate.rs).
    HeartbeatResponse {
        context: u64,
        tick: u64,
        incarnation: u64,
    },
    /// One chunk of a snapshot; `offset` is where `chunk` starts in `data`.
    Snapshot {
        meta: SnapshotMeta,
        total_len: u64,
        offset: u64,
        #[serde(with = "crate::byte_serde::vec")]
        chunk: Vec<u8>,
        done: bool,
    },
    /// `next_offset` of the chunk expected next; `reject` asks the leader to restart.
    SnapshotResponse {
        index: Index,
        next_offset: u64,
        reject: bool,
    },
    /// Leadership transfer: campaign now.
    TimeoutNow,
    /// A follower asks its leader for a read index on behalf of a client; `lease`:
    /// the leader may answer from its lease (`ReadMode::Lease`).
    ReadIndex {
        context: u64,
        lease: bool,
    },
    /// `index` is the read index; `reject` when the receiver is not leader.
    ReadIndexResponse {
        context: u64,
        index: Index,
        reject: bool,
    },
    /// The leader's last heartbeat before it goes idle: every follower holds the whole
    /// log and `commit` is its last index. A follower at `commit` stops ticking too and
    /// does not answer; one that cannot answers with a `HeartbeatResponse`, which wakes
    /// the leader.
    Quiesce {
        commit: Index,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding is the two lists, voters then learners (as since the first
    /// version, when learners was always empty).
    #[test]
    fn conf_state_is_two_lists() {
        let config = bincode::config::standard();
        let conf_state =
            ConfState { voters: vec![NodeId(1), NodeId(3)], learners: vec![NodeId(4)] };
        let encoded = bincode::serde::encode_to_vec(&conf_state, config).unwrap();
        let two_lists = (vec![NodeId(1), NodeId(3)], vec![NodeId(4)]);
        assert_eq!(encoded, bincode::serde::encode_to_vec(&two_lists, config).unwrap());
        let (decoded, _): (ConfState, usize) =
            bincode::serde::decode_from_slice(&encoded, config).unwrap();
        assert_eq!(decoded, conf_state);
    }
}
