//! Wire frames (src/wire/): every message round-trips; every truncation, bit
//! flip and oversized length is refused with an error, never a panic, and decoding
//! never allocates more than a frame may hold.

use proptest::collection::vec;
use proptest::prelude::*;

use rangedb::raft::{ConfState, Entry, EntryFormat, Message, MessageBody, NodeId, SnapshotMeta};
use rangedb::range::descriptor::{RangeDescriptor, RangeId};
use rangedb::range::kv::{KeyValue, RequestId};
use rangedb::range::txn::{
    LockInfo, ReadCheck, SpanCheck, TxnId, TxnOp, TxnPart, TxnResult, TxnStatus, TxnWrite,
};
use rangedb::wire::*;

use crate::alloc_probe::largest_allocation;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn node() -> impl Strategy<Value = NodeId> {
    any::<u64>().prop_map(NodeId)
}

fn entry() -> impl Strategy<Value = Entry> {
    (any::<u64>(), any::<u64>(), any::<(u8, u8)>(), bytes(40)).prop_map(
        |(term, index, (kind, version), data)| Entry {
            term,
            index,
            format: EntryFormat { kind, version },
            data: data.into(),
        },
    )
}

fn body() -> impl Strategy<Value = MessageBody> {
    let meta = (any::<u64>(), any::<u64>(), vec(node(), 0..4), vec(node(), 0..2)).prop_map(
        |(index, term, voters, learners)| SnapshotMeta {
            index,
            term,
            conf_state: ConfState { voters, learners },
        },
    );
    prop_oneof![
        (any::<u64>(), any::<u64>())
            .prop_map(|(last_index, last_term)| MessageBody::PreVote { last_index, last_term }),
        any::<bool>().prop_map(|reject| MessageBody::PreVoteResponse { reject }),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(last_index, last_term, transfer)| {
                MessageBody::Vote { last_index, last_term, transfer }
            }
        ),
        any::<bool>().prop_map(|reject| MessageBody::VoteResponse { reject }),
        (any::<u64>(), any::<u64>(), vec(entry(), 0..4), any::<u64>()).prop_map(
            |(prev_index, prev_term, entries, commit)| MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit
            }
        ),
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(reject, index, hint_index, hint_term)| MessageBody::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term
            }
        ),
        (any::<u64>(), any::<u64>())
            .prop_map(|(commit, context)| MessageBody::Heartbeat { commit, context }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(context, tick, incarnation)| {
            MessageBody::HeartbeatResponse { context, tick, incarnation }
        }),
        (meta, any::<u64>(), any::<u64>(), bytes(64), any::<bool>()).prop_map(
            |(meta, total_len, offset, chunk, done)| MessageBody::Snapshot {
                meta,
                total_len,
                offset,
                chunk,
                done
            }
        ),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(index, next_offset, reject)| {
            MessageBody::SnapshotResponse { index, next_offset, reject }
        }),
        Just(MessageBody::TimeoutNow),
        (any::<u64>(), any::<bool>())
            .prop_map(|(context, lease)| MessageBody::ReadIndex { context, lease }),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(context, index, reject)| {
            MessageBody::ReadIndexResponse { context, index, reject }
        }),
    ]
}

fn peer_batch() -> impl Strategy<Value = PeerBatch> {
    let envelope = (any::<u64>(), node(), node(), any::<u64>(), body()).prop_map(
        |(range, from, to, term, body)| Envelope {
            range: RangeId(range),
            message: Message { from, to, term, body },
        },
    );
    vec(envelope, 0..6).prop_map(|envelopes| PeerBatch { envelopes })
}

fn hello() -> impl Strategy<Value = Hello> {
    prop_oneof![
        (any::<(u32, u32)>(), any::<(u64, u64, u64)>(), node()).prop_map(
            |((min_version, max_version), (cluster, identity, founding), from)| Hello {
                min_version,
                max_version,
                role: HelloRole::Peer { cluster, from, identity, founding },
            }
        ),
        any::<(u32, u32)>().prop_map(|(min_version, max_version)| Hello {
            min_version,
            max_version,
            role: HelloRole::Client
        }),
    ]
}

fn request_id() -> impl Strategy<Value = RequestId> {
    (any::<u64>(), any::<u64>()).prop_map(|(client, seq)| RequestId { client, seq })
}

fn consistency() -> impl Strategy<Value = ReadConsistency> {
    prop_oneof![
        Just(ReadConsistency::Linearizable),
        Just(ReadConsistency::Lease),
        Just(ReadConsistency::Local)
    ]
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    let request = prop_oneof![
        (bytes(20), bytes(40), request_id()).prop_map(|(key, value, request_id)| Request::Put {
            key,
            value,
            request_id
        }),
        (bytes(20), request_id()).prop_map(|(key, request_id)| Request::Delete { key, request_id }),
        (bytes(20), any::<Option<u64>>(), consistency())
            .prop_map(|(key, revision, consistency)| Request::Get { key, revision, consistency }),
        (bytes(20), proptest::option::of(bytes(20)), any::<u64>(), any::<Option<u64>>()).prop_map(
            |(start, end, limit, revision)| Request::Scan { start, end, limit, revision }
        ),
        Just(Request::RangeTable),
        Just(Request::Status),
        (any::<u64>(), node(), node(), "[a-z:0-9.]{0,20}", any::<u64>(), any::<u8>()).prop_map(
            |(range, a, b, address, identity, op)| Request::ChangeReplicas {
                range: RangeId(range),
                op: match op % 4 {
                    0 => ReplicaOp::AddLearner { node: a, address, identity },
                    1 => ReplicaOp::Promote { node: a },
                    2 => ReplicaOp::Remove { node: a, last: op % 8 < 4 },
                    _ => ReplicaOp::Replace { remove: a, add: b, last: op % 8 < 4 },
                },
            }
        ),
        (any::<u64>(), "[a-z:0-9.]{0,20}")
            .prop_map(|(identity, address)| Request::Join { identity, address }),
        (bytes(10), any::<[u64; 2]>(), txn_part(), any::<u8>(), any::<Option<u64>>()).prop_map(
            |(key, [client, seq], part, op, request)| {
                let txn = TxnId { client, seq };
                let commit = op % 2 == 0;
                Request::Txn {
                    key: key.clone(),
                    op: match op % 7 {
                        0 => TxnOp::Commit1pc { part },
                        1 => TxnOp::Prepare {
                            txn,
                            anchor: key.clone(),
                            participants: vec![key],
                            part,
                        },
                        2 => TxnOp::Decide { txn, anchor: key, commit },
                        3 => TxnOp::Resolve { txn, commit },
                        4 => TxnOp::Push { txn, anchor: key },
                        _ => TxnOp::Forget { txn },
                    },
                    request_id: request.map(|seq| RequestId { client, seq }),
                }
            }
        ),
        (bytes(10), any::<[u64; 2]>()).prop_map(|(anchor, [client, seq])| Request::TxnStatus {
            anchor,
            txn: TxnId { client, seq }
        }),
        (bytes(10), any::<u32>()).prop_map(|(key, limit)| Request::TxnLocks { key, limit }),
        ("[a-z_]{0,20}", "[a-z0-9]{0,8}", request_id())
            .prop_map(|(name, value, request_id)| Request::ConfigSet { name, value, request_id }),
        (bytes(10), bytes(10), any::<u64>()).prop_map(|(start, end, limit)| Request::MetaScan {
            start,
            end,
            limit
        }),
        bytes(10).prop_map(|key| Request::Split { key }),
    ];
    (any::<u64>(), request).prop_map(|(id, request)| ClientRequest { id, request })
}

fn txn_part() -> impl Strategy<Value = TxnPart> {
    let read = || (bytes(10), any::<u64>()).prop_map(|(key, revision)| ReadCheck { key, revision });
    let write = (bytes(10), proptest::option::of(bytes(20)))
        .prop_map(|(key, value)| TxnWrite { key, value });
    let span = (bytes(5), proptest::option::of(bytes(5)), vec(read(), 0..3))
        .prop_map(|(start, end, seen)| SpanCheck { start, end, seen });
    (vec(read(), 0..3), vec(span, 0..2), vec(write, 0..3))
        .prop_map(|(reads, spans, writes)| TxnPart { reads, spans, writes })
}

fn lock_info() -> impl Strategy<Value = LockInfo> {
    (bytes(10), any::<[u64; 2]>(), bytes(10), any::<bool>()).prop_map(
        |(key, [client, seq], anchor, write)| LockInfo {
            key,
            txn: TxnId { client, seq },
            anchor,
            write,
        },
    )
}

fn key_value() -> impl Strategy<Value = KeyValue> {
    (bytes(20), bytes(40), any::<u64>()).prop_map(|(key, value, revision)| KeyValue {
        key,
        value,
        revision,
    })
}

fn descriptor() -> impl Strategy<Value = RangeDescriptor> {
    (any::<u64>(), bytes(10), proptest::option::of(bytes(10)), any::<u64>(), vec(node(), 0..4))
        .prop_map(|(id, start, end, generation, replicas)| RangeDescriptor {
            id: RangeId(id),
            start,
            end,
            generation,
            replicas,
        })
}

fn client_response() -> impl Strategy<Value = ClientResponse> {
    let text = "[a-z :0-9\u{e9}\u{1F600}]{0,20}";
    let nodes = || vec(node(), 0..4);
    let status = (
        descriptor(),
        text,
        any::<Option<u64>>(),
        any::<[u64; 4]>(),
        (nodes(), nodes(), nodes()),
        vec((node(), any::<u64>()), 0..4),
        any::<(u64, u64, u64, u64)>(),
    )
        .prop_map(
            |(
                descriptor,
                role,
                leader,
                [term, commit, applied, last_index],
                (voters, outgoing, learners),
                matched,
                (config_revision, history_revisions, keys, bytes),
            )| RangeStatus {
                descriptor,
                role,
                leader: leader.map(NodeId),
                term,
                commit,
                applied,
                last_index,
                voters,
                outgoing,
                learners,
                matched,
                settings: rangedb::range::settings::RangeSettings {
                    config_revision,
                    history_revisions,
                },
                keys,
                bytes,
            },
        );
    let node_status = (
        (node(), text, any::<(u64, u64)>()),
        vec((node(), any::<u64>()), 0..3),
        vec((node(), text, any::<bool>()), 0..3),
        vec(status, 0..3),
        nodes(),
    )
        .prop_map(
            |((node, address, (cluster, identity)), identities, peers, ranges, removed)| {
                NodeStatus { node, address, cluster, identity, identities, peers, removed, ranges }
            },
        );
    let response = prop_oneof![
        any::<u64>().prop_map(|revision| Response::Put { revision }),
        (any::<u64>(), any::<bool>())
            .prop_map(|(revision, existed)| Response::Delete { revision, existed }),
        (proptest::option::of(key_value()), any::<u64>(), proptest::option::of(lock_info()))
            .prop_map(|(kv, read_revision, lock)| Response::Get { kv, read_revision, lock }),
        (
            vec(key_value(), 0..4),
            proptest::option::of(bytes(10)),
            any::<u64>(),
            vec(lock_info(), 0..2)
        )
            .prop_map(|(kvs, resume, read_revision, locks)| Response::Scan {
                kvs,
                resume,
                read_revision,
                locks
            }),
        lock_info().prop_map(|lock| Response::Locked { lock }),
        vec(lock_info(), 0..3).prop_map(|locks| Response::TxnLocks { locks }),
        (any::<u64>(), bytes(5), lock_info(), any::<u8>(), vec(bytes(5), 0..3)).prop_map(
            |(revision, key, lock, pick, participants)| Response::Txn(match pick % 7 {
                0 => TxnResult::Committed { revision },
                1 => TxnResult::Conflict { key },
                2 => TxnResult::Locked(lock),
                3 => TxnResult::Prepared,
                4 => TxnResult::Aborted,
                5 => TxnResult::Status { status: Some(TxnStatus::Pending), participants },
                _ => TxnResult::Resolved,
            })
        ),
        (vec(descriptor(), 0..4), vec((node(), text), 0..3))
            .prop_map(|(ranges, addresses)| Response::RangeTable { ranges, addresses }),
        node_status.prop_map(Response::Status),
        (any::<u64>(), nodes(), nodes(), nodes()).prop_map(
            |(range, voters, outgoing, learners)| Response::Membership(RangeMembership {
                range: RangeId(range),
                voters,
                outgoing,
                learners,
            })
        ),
        (any::<[u64; 2]>(), vec((node(), text, any::<u64>()), 0..3), nodes(), vec(bytes(5), 0..3))
            .prop_map(|([cluster, id], members, removed, split_keys)| {
                Response::Joined(JoinInfo {
                    cluster,
                    node: NodeId(id),
                    members,
                    removed: removed.clone(),
                    founders: removed,
                    split_keys,
                })
            }),
        (any::<u64>(), proptest::option::of(node()), proptest::option::of(text)).prop_map(
            |(range, leader, address)| Response::NotLeader {
                range: RangeId(range),
                leader,
                address
            }
        ),
        any::<[u64; 3]>().prop_map(|[revision, first, last]| Response::RevisionUnavailable {
            revision,
            first,
            last
        }),
        text.prop_map(|reason| Response::Invalid { reason }),
        text.prop_map(|reason| Response::Unavailable { reason }),
        (any::<u64>(), descriptor()).prop_map(|(range, descriptor)| Response::WrongRange {
            range: RangeId(range),
            descriptor
        }),
        (descriptor(), descriptor()).prop_map(|(left, right)| Response::Split {
            left: Box::new(left),
            right: Box::new(right)
        }),
    ];
    (any::<u64>(), response).prop_map(|(id, response)| ClientResponse { id, response })
}

/// Any strict prefix is incomplete; a shortened payload under a fixed-up header is a
/// decode error; any bit flip is never accepted.
fn check_damage<T>(value: &T, flip_bit: usize) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let frame = encode_frame(value);
    let (decoded, used) = decode_frame::<T>(&frame).unwrap().expect("complete");
    prop_assert_eq!(&decoded, value);
    prop_assert_eq!(used, frame.len());
    let cut = flip_bit % frame.len();
    prop_assert!(matches!(decode_frame::<T>(&frame[..cut]), Ok(None)));
    let payload_cut = flip_bit % (frame.len() - FRAME_HEADER_BYTES);
    let payload = &frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + payload_cut];
    let mut shortened = (payload_cut as u32).to_le_bytes().to_vec();
    shortened.extend(crc32fast::hash(payload).to_le_bytes());
    shortened.extend(payload);
    let result = decode_frame::<T>(&shortened);
    prop_assert!(matches!(result, Err(WireError::Decode(_))), "cut {}: {:?}", payload_cut, result);
    let mut flipped = frame.clone();
    let bit = flip_bit % (frame.len() * 8);
    flipped[bit / 8] ^= 1 << (bit % 8);
    let result = decode_frame::<T>(&flipped);
    prop_assert!(!matches!(result, Ok(Some(_))), "bit {} flipped was accepted", bit);
    Ok(())
}

proptest! {
    #![proptest_config(crate::config("wire", 256))]

    #[test]
    fn peer_batches_round_trip_and_damage_is_refused(
        batch in peer_batch(), hello in hello(), bit in any::<usize>()
    ) {
        check_damage(&batch, bit)?;
        check_damage(&hello, bit)?;
        // Two frames back to back decode one at a time.
        let mut stream = encode_frame(&hello);
        let first = stream.len();
        stream.extend(encode_frame(&batch));
        let (decoded, used) = decode_frame::<Hello>(&stream).unwrap().unwrap();
        prop_assert_eq!((decoded, used), (hello, first));
        let (decoded, _) = decode_frame::<PeerBatch>(&stream[first..]).unwrap().unwrap();
        prop_assert_eq!(decoded, batch);
    }

    #[test]
    fn client_frames_round_trip_and_damage_is_refused(
        request in client_request(), response in client_response(), bit in any::<usize>()
    ) {
        check_damage(&request, bit)?;
        check_damage(&response, bit)?;
    }

    #[test]
    fn oversized_length_is_refused_from_the_header(
        len in (MAX_FRAME_BYTES + 1)..=u32::MAX, rest in vec(any::<u8>(), 4..64)
    ) {
        let mut frame = len.to_le_bytes().to_vec();
        frame.extend(rest);
        let peer = decode_frame::<PeerBatch>(&frame);
        let refused = matches!(peer, Err(WireError::TooLarge { len: l, .. }) if l == len);
        prop_assert!(refused, "{:?}", peer);
        let client = decode_frame::<ClientRequest>(&frame);
        let refused = matches!(client, Err(WireError::TooLarge { len: l, .. }) if l == len);
        prop_assert!(refused, "{:?}", client);
    }

    /// Garbage under a valid header, with huge varint length prefixes planted in it,
    /// is refused (or decoded) without any allocation beyond the frame limit.
    #[test]
    fn garbage_payload_never_allocates_past_the_limit(
        mut payload in bytes(256),
        plants in vec((any::<usize>(), any::<u64>()), 0..4),
    ) {
        for (at, claim) in plants {
            let at = if payload.is_empty() { 0 } else { at % payload.len() };
            let mut huge = vec![253u8];
            huge.extend(claim.max(1 << 40).to_le_bytes());
            payload.splice(at..at, huge);
        }
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend(crc32fast::hash(&payload).to_le_bytes());
        frame.extend(&payload);
        let limit = MAX_FRAME_BYTES as usize;
        let (_, largest) = largest_allocation(|| decode_frame::<PeerBatch>(&frame).is_ok());
        prop_assert!(largest <= limit, "PeerBatch decode allocated {} bytes", largest);
        let (_, largest) = largest_allocation(|| decode_frame::<ClientRequest>(&frame).is_ok());
        prop_assert!(largest <= limit, "ClientRequest decode allocated {} bytes", largest);
        let (_, largest) = largest_allocation(|| decode_frame::<ClientResponse>(&frame).is_ok());
        prop_assert!(largest <= limit, "ClientResponse decode allocated {} bytes", largest);
    }
}
