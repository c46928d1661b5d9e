//! Compare-then-else transactions, etcd's form (`etcdctl txn`, `clientv3.Txn`): if
//! every compare holds, run the success operations, else the failure ones, atomically.
//! Run as one rangedb transaction (`Client::txn`, again from the start on a
//! conflict): every key compared or read is validated at commit, so the outcome is the
//! one a serial execution would give, across ranges too. `Target::Mod` is the key's mod
//! revision in its range; rangedb keeps no create revision or version count, so
//! `Create` and `Version` mean 0 for an absent key and more for a present one.

use serde::{Serialize, Serializer};

use super::{escape, Client, ClientError};
use crate::range::kv::KeyValue;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Value,
    Mod,
    Create,
    Version,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub target: Target,
    pub key: Vec<u8>,
    pub cmp: Cmp,
    pub operand: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: Vec<u8>, value: Vec<u8> },
    Get { key: Vec<u8> },
    Del { key: Vec<u8> },
}

/// A compare-then-else transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompareTxn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

/// What one operation returned, in raw bytes (the HTTP API sends them in base64); as
/// JSON (`rangedb txn --json`), keys and values are escaped text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    Put { key: Vec<u8> },
    Get { key: Vec<u8>, kv: Option<KeyValue> },
    Del { key: Vec<u8>, deleted: u64 },
}

/// `OpResult` as the CLI's JSON shows it.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Shown {
    Put { key: String },
    Get { key: String, value: Option<String>, mod_revision: u64 },
    Del { key: String, deleted: u64 },
}

impl Serialize for OpResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let shown = match self {
            OpResult::Put { key } => Shown::Put { key: escape(key) },
            OpResult::Get { key, kv } => Shown::Get {
                key: escape(key),
                value: kv.as_ref().map(|kv| escape(&kv.value)),
                mod_revision: kv.as_ref().map_or(0, |kv| kv.revision),
            },
            OpResult::Del { key, deleted } => Shown::Del { key: escape(key), deleted: *deleted },
        };
        shown.serialize(serializer)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub succeeded: bool,
    pub results: Vec<OpResult>,
    /// The revision of the commit (0 when nothing was written).
    pub revision: u64,
}

pub fn holds(compare: &Compare, kv: Option<&KeyValue>) -> bool {
    use std::cmp::Ordering;
    let ordering = match compare.target {
        Target::Value => match kv {
            None => return compare.cmp == Cmp::NotEqual,
            Some(kv) => kv.value.as_slice().cmp(compare.operand.as_slice()),
        },
        Target::Mod | Target::Create | Target::Version => {
            let number: u64 = String::from_utf8_lossy(&compare.operand).parse().unwrap_or(0);
            let mine = match (&compare.target, kv) {
                (_, None) => 0,
                (Target::Mod, Some(kv)) => kv.revision,
                // Present: a create revision / version above 0.
                (_, Some(_)) => u64::MAX,
            };
            mine.cmp(&number)
        }
    };
    match compare.cmp {
        Cmp::Equal => ordering == Ordering::Equal,
        Cmp::NotEqual => ordering != Ordering::Equal,
        Cmp::Less => ordering == Ordering::Less,
        Cmp::Greater => ordering == Ordering::Greater,
    }
}

impl Client {
    /// Runs a compare-then-else transaction, from the start again on a conflict.
    ///
    /// # Errors
    /// As `Client::txn`.
    pub async fn compare_txn(&self, txn: &CompareTxn) -> Result<Outcome, ClientError> {
        run(self, txn).await
    }
}

async fn run(client: &Client, txn: &CompareTxn) -> Result<Outcome, ClientError> {
    let (outcome, committed) = client
        .txn(|t| {
            let txn = txn.clone();
            async move {
                let mut succeeded = true;
                for compare in &txn.compares {
                    let kv = t.get(&compare.key).await?;
                    succeeded &= holds(compare, kv.as_ref());
                }
                let ops = if succeeded { &txn.success } else { &txn.failure };
                let mut results = Vec::new();
                for op in ops {
                    results.push(match op {
                        Op::Put { key, value } => {
                            t.put(key, value)?;
                            OpResult::Put { key: key.clone() }
                        }
                        Op::Get { key } => {
                            OpResult::Get { key: key.clone(), kv: t.get(key).await? }
                        }
                        Op::Del { key } => {
                            let existed = t.get(key).await?.is_some();
                            t.delete(key)?;
                            OpResult::Del { key: key.clone(), deleted: u64::from(existed) }
                        }
                    });
                }
                Ok(Outcome { succeeded, results, revision: 0 })
            }
        })
        .await?;
    Ok(Outcome { revision: committed.revision, ..outcome })
}
