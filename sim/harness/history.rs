//! The client history: every operation with its invoke and completion times (simulated
//! milliseconds) and outcome.

use std::collections::BTreeMap;
use std::fmt;

use rangedb::client::escape;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `seq`: the RequestId sequence number the client library stamped on it.
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        seq: u64,
    },
    Delete {
        key: Vec<u8>,
        seq: u64,
    },
    /// `lease`: the read may be answered from the leader's lease.
    Get {
        key: Vec<u8>,
        lease: bool,
    },
    Scan {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

/// What a read of one key saw: its value and the revision that wrote it, or nothing.
pub type Seen = Option<(Vec<u8>, u64)>;

/// Every key's last value on each node (by node index), read at the end of a run.
pub type Finals = BTreeMap<usize, BTreeMap<Vec<u8>, Seen>>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Put {
        revision: u64,
    },
    Delete {
        existed: bool,
    },
    /// (value, revision that wrote it)
    Get(Seen),
    Scan(Vec<(Vec<u8>, Vec<u8>, u64)>),
    /// Definitely no effect.
    Failed(String),
    /// A write that may or may not have happened.
    Unknown(String),
}

#[derive(Clone, Debug)]
pub struct Op {
    pub client: u64,
    pub call: Call,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: Outcome,
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match &self.call {
            Call::Put { key, .. } | Call::Delete { key, .. } | Call::Get { key, .. } => key,
            Call::Scan { start, .. } => start,
        }
    }
    pub fn seq(&self) -> Option<u64> {
        match self.call {
            Call::Put { seq, .. } | Call::Delete { seq, .. } => Some(seq),
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = match &self.call {
            Call::Put { key, value, seq } => {
                format!("put({}, {}) #{seq}", escape(key), escape(value))
            }
            Call::Delete { key, seq } => format!("delete({}) #{seq}", escape(key)),
            Call::Get { key, lease: false } => format!("get({})", escape(key)),
            Call::Get { key, lease: true } => format!("get_lease({})", escape(key)),
            Call::Scan { start, end } => format!(
                "scan({}, {})",
                escape(start),
                end.as_deref().map(escape).unwrap_or_else(|| "∞".into())
            ),
        };
        let outcome = match &self.outcome {
            Outcome::Put { revision } => format!("ok rev {revision}"),
            Outcome::Delete { existed } => format!("ok existed={existed}"),
            Outcome::Get(None) => "ok none".into(),
            Outcome::Get(Some((v, r))) => format!("ok {} @{r}", escape(v)),
            Outcome::Scan(kvs) => format!(
                "ok [{}]",
                kvs.iter()
                    .map(|(k, v, r)| format!("{}={}@{r}", escape(k), escape(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Outcome::Failed(reason) => format!("FAILED ({reason})"),
            Outcome::Unknown(reason) => format!("UNKNOWN ({reason})"),
        };
        write!(
            f,
            "[{:>6} .. {:>6} ms] c{} {call} -> {outcome}",
            self.invoke_ms, self.complete_ms, self.client
        )
    }
}
