//! Runs every fuzz target's body (`rangedb::fuzzing`) over its seed corpus in
//! `fuzz/corpus/<target>/`, so the targets keep compiling and the inputs that once
//! found something stay fixed.

use std::path::Path;

#[test]
fn fuzz_bodies_accept_their_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in rangedb::fuzzing::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus {} is empty", dir.display());
        for file in files {
            let data = std::fs::read(&file).expect("corpus file");
            eprintln!("{target}: {}", file.display());
            rangedb::fuzzing::run_target(target, &data);
        }
    }
}

/// Writes the generated part of the seed corpus (`cargo test --test proptests --
/// --ignored write_seed_corpus`); the files are committed, so this runs only when the
/// formats change.
#[test]
#[ignore]
fn write_seed_corpus() {
    use std::sync::Arc;

    use rangedb::fuzzing::MemDisk;
    use rangedb::raft::{ConfState, Entry, EntryFormat, HardState, Message, MessageBody, NodeId};
    use rangedb::raft::{Snapshot, SnapshotMeta};
    use rangedb::range::descriptor::RangeId;
    use rangedb::range::kv::{Command, KeyValue, KvStore, RequestId, WriteOp, COMMAND_FORMAT};
    use rangedb::storage::{SnapshotStore, Wal, WalOptions, WalRecord};
    use rangedb::wire::*;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = |target: &str, name: &str, mode: u8, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let mut data = vec![mode];
        data.extend(bytes);
        std::fs::write(dir.join(name), data).unwrap();
    };
    let bincode = |value: &dyn erased::Encode| value.encode();
    let message = |body| Message { from: NodeId(1), to: NodeId(2), term: 3, body };
    let entries = vec![
        Entry { term: 2, index: 5, format: EntryFormat::NOOP, data: vec![].into() },
        Entry { term: 2, index: 6, format: COMMAND_FORMAT, data: b"put".to_vec().into() },
    ];
    let conf_state = ConfState { voters: vec![NodeId(1), NodeId(2)], learners: vec![] };
    let meta = SnapshotMeta { index: 10, term: 2, conf_state };
    let batch = PeerBatch {
        envelopes: [
            MessageBody::Vote { last_index: 1, last_term: 1, transfer: false },
            MessageBody::Append {
                prev_index: 4,
                prev_term: 1,
                entries: entries.clone(),
                commit: 4,
            },
            MessageBody::Snapshot {
                meta: meta.clone(),
                total_len: 9,
                offset: 0,
                chunk: vec![7; 9],
                done: true,
            },
            MessageBody::ReadIndexResponse { context: 7, index: 12, reject: false },
        ]
        .into_iter()
        .map(|body| Envelope { range: RangeId(4), message: message(body) })
        .collect(),
    };
    let hello =
        Hello::new(HelloRole::Peer { cluster: 99, from: NodeId(1), identity: 7, founding: 0 });
    let mut stream = encode_frame(&hello);
    stream.extend(encode_frame(&batch));
    write("peer_frame", "hello-and-batch", 0, &stream);
    write("peer_frame", "batch-payload", 1, &bincode(&batch));

    let request_id = RequestId { client: 5, seq: 9 };
    let put = ClientRequest {
        id: 1,
        request: Request::Put { key: b"k".to_vec(), value: b"v".to_vec(), request_id },
    };
    let scan = ClientRequest {
        id: 2,
        request: Request::Scan { start: b"a".to_vec(), end: None, limit: 10, revision: Some(3) },
    };
    let kv = KeyValue { key: b"a".to_vec(), value: b"1".to_vec(), revision: 3 };
    let response = ClientResponse {
        id: 2,
        response: Response::Scan {
            kvs: vec![kv],
            resume: Some(b"g".to_vec()),
            read_revision: 4,
            locks: vec![],
        },
    };
    let mut stream = encode_frame(&Hello::new(HelloRole::Client));
    stream.extend(encode_frame(&put));
    stream.extend(encode_frame(&scan));
    write("client_frame", "requests", 0, &stream);
    write("client_frame", "response", 0, &encode_frame(&response));
    write("client_frame", "put-payload", 1, &bincode(&put));

    let records = [
        WalRecord::HardState {
            range: RangeId(1),
            hard_state: HardState { term: 2, vote: Some(NodeId(1)), commit: 4, repair_term: 0 },
        },
        WalRecord::Entries { range: RangeId(1), entries: entries.clone() },
        WalRecord::SnapshotInstalled { range: RangeId(2), index: 7, term: 1 },
        WalRecord::Entries {
            range: RangeId(2),
            entries: vec![Entry {
                term: 1,
                index: 8,
                format: COMMAND_FORMAT,
                data: vec![1].into(),
            }],
        },
        WalRecord::Entries {
            range: RangeId(1),
            entries: vec![Entry {
                term: 3,
                index: 6,
                format: EntryFormat::NOOP,
                data: vec![].into(),
            }],
        },
    ];
    let disk = MemDisk::new();
    let shared: Arc<dyn rangedb::env::Disk> = Arc::new(disk.clone());
    let dir = Path::new("/wal");
    let (mut wal, _) = Wal::open(shared, dir, WalOptions { segment_bytes: 256 }).unwrap();
    for (k, record) in records.iter().enumerate() {
        wal.append(record).unwrap();
        if k % 2 == 1 {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    let paths = wal.segment_paths();
    let segments: Vec<Vec<u8>> = paths.iter().map(|p| disk.file(p).unwrap()).collect();
    write("wal_recovery", "segment", 0, &segments[0]);
    if segments.len() > 1 {
        let mut both = vec![(segments[0].len() / 8) as u8];
        both.extend(&segments[0]);
        both.extend(&segments[1]);
        write("wal_recovery", "two-segments", 2, &both);
    }
    let mut chunks = Vec::new();
    for (k, record) in records.iter().enumerate() {
        let bytes = rangedb::storage::wal::encode_record(record);
        chunks.push((bytes.len() + 1) as u8);
        chunks.push((k % 2) as u8);
        chunks.extend(bytes);
    }
    write("wal_recovery", "framed-records", 1, &chunks);

    let mut store = KvStore::new();
    let put = |key: &[u8], client| Command {
        request_id: Some(RequestId { client, seq: 1 }),
        op: WriteOp::Put { key: key.to_vec(), value: b"value".to_vec() },
    };
    store.apply(1, &put(b"a", 1));
    store.apply(2, &put(b"b", 2));
    store.apply(3, &Command { request_id: None, op: WriteOp::Delete { key: b"a".to_vec() } });
    let image = store.snapshot();
    let snapshot = Snapshot { meta: SnapshotMeta { index: 7, ..meta }, data: image.clone() };
    let disk = MemDisk::new();
    let mut snapshots = SnapshotStore::open(Arc::new(disk.clone()), Path::new("/snap")).unwrap();
    snapshots.save(RangeId(1), &snapshot).unwrap();
    let file = disk.file(Path::new("/snap/0000000000000001-0000000000000007.snap")).unwrap();
    write("snapshot", "file", 0, &file);
    write("snapshot", "payload", 1, &bincode(&snapshot));
    write("snapshot", "kv-image", 2, &image);

    write("cli", "duration", 0, b"1.5s");
    write("cli", "duration-ms", 3, b"250ms");
    write("cli", "peers", 1, b"1=127.0.0.1:7001,2=localhost:7002, 3 = [::1]:7003");
    write("cli", "split-keys", 2, b"8,g,p");
}

/// bincode (standard) of any serde value, behind a trait object for the closure above.
mod erased {
    pub trait Encode {
        fn encode(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Vec<u8> {
            bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap()
        }
    }
}
