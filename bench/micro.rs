//! Micro benchmarks of the hot paths, with std timing and hdrhistogram (no framework:
//! each case runs a fixed amount of work and prints one line).
//!
//! ```text
//! cargo bench --bench micro              # every case
//! cargo bench --bench micro -- raft kv   # cases whose name contains "raft" or "kv"
//! ```
//!
//! - `wal/*`: `Wal::append` of N single-entry records then one `sync` (group commit)
//!   on a real file in a temporary directory, fsync on. Reports records/s and the
//!   latency of one append+sync batch.
//! - `raft/*`: three in-memory `RaftGroup`s (the sans-IO core, no IO, no encoding):
//!   proposals of 256-byte commands in batches, every Ready handled as the node does.
//!   Reports committed entries/s and messages/s.
//! - `wire/*`: `encode_frame`/`decode_frame` of a client put and of a peer batch.
//! - `kv/*`: `KvStore::apply` of puts over 10,000 keys, `get`, `scan` of 10 keys and
//!   `snapshot` of the store.
//!
//! For instruction counts (stable on a busy machine) run the binary under
//! `valgrind --tool=callgrind` with a case name.

// Benchmarks measure wall time; the determinism lint is for code that runs in
// simulation.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rangedb::env::real_disk::RealDisk;
use rangedb::raft::{
    self, ConfState, Entry, MemStorage, Message, MessageBody, NodeId, RaftGroup, Role,
};
use rangedb::range::descriptor::RangeId;
use rangedb::range::kv::{Command, KvStore, RequestId, WriteOp, COMMAND_FORMAT};
use rangedb::storage::{Wal, WalOptions, WalRecord};
use rangedb::wire::{decode_frame, encode_frame, ClientRequest, Envelope, PeerBatch, Request};

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    println!("{:<28} {:>12} {:>14}  detail", "case", "ns/op", "ops/s");
    for batch in [1, 8, 64, 256] {
        let name = format!("wal/append+sync/batch={batch}");
        if wanted(&name) {
            wal_group_commit(&name, batch);
        }
    }
    for batch in [1, 16, 64] {
        let name = format!("raft/3-node/batch={batch}");
        if wanted(&name) {
            raft_throughput(&name, batch);
        }
    }
    if wanted("wire/client-put") {
        wire_client_put("wire/client-put");
    }
    if wanted("wire/peer-batch") {
        wire_peer_batch("wire/peer-batch");
    }
    if wanted("kv/") {
        kv_cases();
    }
}

fn line(name: &str, ops: u64, elapsed: Duration, detail: &str) {
    let ns = elapsed.as_nanos() as f64 / ops as f64;
    println!("{name:<28} {ns:>12.0} {:>14.0}  {detail}", 1e9 / ns);
}

fn command(key: u64, value_size: usize) -> Vec<u8> {
    let command = Command {
        request_id: Some(RequestId { client: 7, seq: key }),
        op: WriteOp::Put { key: format!("k{key:08}").into_bytes(), value: vec![b'x'; value_size] },
    };
    bincode::serde::encode_to_vec(&command, bincode::config::standard()).expect("encodes")
}

fn wal_group_commit(name: &str, batch: usize) {
    let dir = std::env::temp_dir().join(format!("rangedb-micro-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = WalOptions::default();
    let (mut wal, _) = Wal::open(Arc::new(RealDisk), &dir, options).expect("open WAL");
    let data = command(1, 256);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("bounds");
    let mut index = 0;
    let batches = (4000 / batch).max(200);
    let start = Instant::now();
    for _ in 0..batches {
        let sent = Instant::now();
        for _ in 0..batch {
            index += 1;
            let entries =
                vec![Entry { term: 1, index, format: COMMAND_FORMAT, data: data.clone().into() }];
            wal.append(&WalRecord::Entries { range: RangeId(1), entries }).expect("append");
        }
        wal.sync().expect("sync");
        let _ = histogram.record(sent.elapsed().as_micros() as u64);
    }
    let elapsed = start.elapsed();
    let detail = format!(
        "{} syncs, batch p50 {} us p99 {} us",
        batches,
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99)
    );
    line(name, index, elapsed, &detail);
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three in-memory replicas of one group, driven like the node drives them.
struct Cluster {
    nodes: BTreeMap<NodeId, RaftGroup>,
    queue: Vec<Message>,
    messages: u64,
    committed: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let conf_state = ConfState { voters: voters.clone(), learners: vec![] };
        let nodes = voters
            .iter()
            .map(|id| {
                let config = raft::Config::new(*id, 1000 + id.0);
                let group =
                    RaftGroup::new(config, MemStorage::new(conf_state.clone())).expect("valid");
                (*id, group)
            })
            .collect();
        let mut cluster = Cluster { nodes, queue: Vec::new(), messages: 0, committed: 0 };
        cluster.nodes.get_mut(&NodeId(1)).expect("node 1").campaign();
        cluster.settle();
        assert_eq!(cluster.nodes[&NodeId(1)].role(), Role::Leader, "node 1 won");
        cluster
    }

    /// Handles Readies and delivers messages until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for (id, group) in self.nodes.iter_mut() {
                while group.has_ready() {
                    moved = true;
                    let mut ready = group.ready();
                    self.queue.append(&mut ready.messages);
                    self.queue.append(&mut ready.persisted_messages);
                    if *id == NodeId(1) {
                        self.committed += ready.committed_entries.len() as u64;
                    }
                    black_box(&ready.committed_entries);
                    group.advance(ready);
                }
            }
            for message in std::mem::take(&mut self.queue) {
                moved = true;
                self.messages += 1;
                let group = self.nodes.get_mut(&message.to).expect("known node");
                group.step(message).expect("step");
            }
            if !moved {
                return;
            }
        }
    }
}

fn raft_throughput(name: &str, batch: usize) {
    let mut cluster = Cluster::new();
    let data = command(1, 256);
    let entries = 100_000 / batch * batch;
    let (messages_before, committed_before) = (cluster.messages, cluster.committed);
    let start = Instant::now();
    for _ in 0..entries / batch {
        let leader = cluster.nodes.get_mut(&NodeId(1)).expect("leader");
        for _ in 0..batch {
            leader.propose(COMMAND_FORMAT, data.clone()).expect("leader accepts");
        }
        cluster.settle();
    }
    let elapsed = start.elapsed();
    let committed = cluster.committed - committed_before;
    assert_eq!(committed, entries as u64, "every proposal committed");
    let messages = cluster.messages - messages_before;
    let detail = format!(
        "{:.2} messages/entry, {:.0} messages/s",
        messages as f64 / committed as f64,
        messages as f64 / elapsed.as_secs_f64()
    );
    line(name, committed, elapsed, &detail);
}

fn timed(name: &str, iterations: u64, detail: &str, mut op: impl FnMut(u64)) {
    let start = Instant::now();
    for i in 0..iterations {
        op(i);
    }
    line(name, iterations, start.elapsed(), detail);
}

fn wire_client_put(name: &str) {
    let request = ClientRequest {
        id: 42,
        request: Request::Put {
            key: b"kbench-00001234".to_vec(),
            value: vec![b'x'; 256],
            request_id: RequestId { client: 7, seq: 9 },
        },
    };
    let frame = encode_frame(&request);
    let detail = format!("{} bytes", frame.len());
    timed(&format!("{name}/encode"), 1_000_000, &detail, |_| {
        black_box(encode_frame(black_box(&request)));
    });
    timed(&format!("{name}/decode"), 1_000_000, &detail, |_| {
        let decoded: Option<(ClientRequest, usize)> = decode_frame(black_box(&frame)).expect("ok");
        black_box(decoded);
    });
}

fn wire_peer_batch(name: &str) {
    // What a leader sends a follower in one flush under load: 6 ranges' appends of
    // a few 256-byte entries each.
    let data = command(1, 256);
    let envelopes: Vec<Envelope> = (0..6)
        .map(|range| Envelope {
            range: RangeId(range),
            message: Message {
                from: NodeId(1),
                to: NodeId(2),
                term: 3,
                body: MessageBody::Append {
                    prev_index: 100,
                    prev_term: 3,
                    entries: (101..105)
                        .map(|index| Entry {
                            term: 3,
                            index,
                            format: COMMAND_FORMAT,
                            data: data.clone().into(),
                        })
                        .collect(),
                    commit: 99,
                },
            },
        })
        .collect();
    let batch = PeerBatch { envelopes };
    let frame = encode_frame(&batch);
    let detail = format!("{} bytes, 24 entries", frame.len());
    timed(&format!("{name}/encode"), 200_000, &detail, |_| {
        black_box(encode_frame(black_box(&batch)));
    });
    timed(&format!("{name}/decode"), 200_000, &detail, |_| {
        let decoded: Option<(PeerBatch, usize)> = decode_frame(black_box(&frame)).expect("ok");
        black_box(decoded);
    });
}

fn kv_cases() {
    const KEYS: u64 = 10_000;
    let commands: Vec<Command> = (0..KEYS)
        .map(|k| {
            let data = command(k, 256);
            bincode::serde::decode_from_slice(&data, bincode::config::standard())
                .expect("decodes")
                .0
        })
        .collect();
    let mut kv = KvStore::new();
    let mut index = 0;
    timed("kv/apply-put", 200_000, "10,000 keys, 256 B, new version each", |i| {
        index += 1;
        black_box(kv.apply(index, &commands[(i * 7919 % KEYS) as usize]));
    });
    let key = |i: u64| format!("k{:08}", i * 7919 % KEYS).into_bytes();
    let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    timed("kv/get", 1_000_000, "latest version", |i| {
        black_box(kv.get(&keys[(i % KEYS) as usize], None).expect("latest exists"));
    });
    timed("kv/scan-10", 200_000, "10 keys from a random key", |i| {
        black_box(kv.scan(&keys[(i % KEYS) as usize], None, 10, None).expect("latest"));
    });
    let mut bytes = 0;
    timed("kv/snapshot", 20, "", |_| {
        bytes = black_box(kv.snapshot()).len();
    });
    println!("{:<28} {bytes:>12} bytes per snapshot ({} versions)", "", index);
}
