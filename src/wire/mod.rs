//! Everything that crosses a socket: the frame format and codec (here), the
//! connection hello and peer batches (`peer`), the client protocol (`client`).
//!
//! Layering: this module sits above `raft` and `range` (it carries their messages,
//! descriptors and key-values) and below `env` (whose `Network` sends `Envelope`s),
//! `node` and `client`; nothing here imports upward.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload` where payload is bincode 2
//! (standard config) of one value. `len` is the payload length and is at most
//! `MAX_FRAME_BYTES`; a longer length, a bad checksum or an undecodable payload is
//! rejected and the connection dropped.

pub mod client;
pub mod peer;

pub use client::*;
pub use peer::*;

use serde::Serialize;

/// Largest payload accepted on any connection (a snapshot chunk plus headroom).
pub const MAX_FRAME_BYTES: u32 = 16 << 20;

/// The newest protocol version this node speaks. Version 3 brought the negotiating
/// hello (peer.rs), identities, and entries with a format (raft::EntryFormat);
/// version 4 membership changes (client requests `ChangeReplicas` and `Join`, range
/// configurations in `Status`); version 5 transactions (`Txn`, `TxnStatus`,
/// `TxnLocks`, locks in `Get` and `Scan` answers, command entries of version 2);
/// version 6 runtime settings and backups (`ConfigSet`, `MetaScan`, settings in
/// `Status`, `Backup`, `BackupFetch` and their answers; command entries of version 3,
/// snapshot images of version 4); version 7 splits (`Split`, `WrongRange`, sizes in
/// `Status`; command entries of version 4, snapshot images of version 5).
pub const PROTOCOL_VERSION: u32 = 7;
/// The oldest protocol version this node speaks. Versions 1 and 2 had no
/// negotiation; a node of those is refused by name. Version 3's status and requests
/// have another layout, and its nodes stop at a membership change (an entry kind they
/// cannot read): a cluster moves from 3 to 4 by restarting all nodes on the new
/// binary (DESIGN 6.4). Version 4's `Get` and `Scan` answers have another layout,
/// and its nodes cannot read version-2 commands: 4 to 5 is a full restart too.
/// Version 5's `Status` has another layout and its nodes cannot read version-3
/// commands (settings): 5 to 6 is a full restart as well, and so is 6 to 7 (its
/// `Status` has another layout, its nodes cannot read version-4 commands).
pub const PROTOCOL_VERSION_MIN: u32 = 7;

/// Why a frame was refused. Any of these closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge { len: u32, max: u32 },
    #[error("frame checksum mismatch (expected {expected:#010x}, got {actual:#010x})")]
    Checksum { expected: u32, actual: u32 },
    #[error("undecodable frame payload: {0}")]
    Decode(String),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Bytes before the payload: `len: u32 LE | crc32: u32 LE`.
pub const FRAME_HEADER_BYTES: usize = 8;

/// bincode's standard configuration with a decode limit equal to the frame limit, so
/// a length prefix inside a payload can never make bincode allocate more than a frame.
fn bincode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ MAX_FRAME_BYTES as usize }>,
> {
    bincode::config::standard().with_limit::<{ MAX_FRAME_BYTES as usize }>()
}

/// Bytes allocated for a frame before encoding into it.
const FRAME_CAPACITY_FIRST: usize = 1024;

/// Encodes one value as a complete frame, refusing a payload over `MAX_FRAME_BYTES`
/// (the receiver would drop the connection).
///
/// # Errors
/// `TooLarge` when the payload exceeds `MAX_FRAME_BYTES`; `Decode` if serde refuses the
/// value (not expected for the wire types).
pub fn try_encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    try_encode_frame_sized(value, FRAME_CAPACITY_FIRST)
}

/// `try_encode_frame` into a buffer of `capacity` bytes first (a caller that can
/// estimate a big frame's size saves the doublings and their copies).
///
/// # Errors
/// As `try_encode_frame`.
pub fn try_encode_frame_sized<T: Serialize>(
    value: &T,
    capacity: usize,
) -> Result<Vec<u8>, WireError> {
    // Reserve the header first so the payload is encoded in place, without a copy.
    // Most frames (client requests and replies) fit the first allocation; bigger ones
    // grow by doubling.
    let mut frame = Vec::with_capacity(capacity.max(FRAME_HEADER_BYTES));
    frame.resize(FRAME_HEADER_BYTES, 0);
    bincode::serde::encode_into_std_write(value, &mut frame, bincode_config())
        .map_err(|error| WireError::Decode(format!("cannot encode: {error}")))?;
    let payload_len = frame.len() - FRAME_HEADER_BYTES;
    if payload_len > MAX_FRAME_BYTES as usize {
        return Err(WireError::TooLarge {
            len: u32::try_from(payload_len).unwrap_or(u32::MAX),
            max: MAX_FRAME_BYTES,
        });
    }
    let crc = crc32fast::hash(&frame[FRAME_HEADER_BYTES..]);
    // The cast holds: payload_len <= MAX_FRAME_BYTES, a u32.
    frame[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// Encodes one value as a complete frame.
///
/// # Panics
/// If the payload exceeds `MAX_FRAME_BYTES`: callers size what they send (snapshot
/// chunks, batches) below the limit; use `try_encode_frame` where they cannot.
pub fn encode_frame<T: Serialize>(value: &T) -> Vec<u8> {
    match try_encode_frame(value) {
        Ok(frame) => frame,
        Err(error) => panic!("encode_frame: {error}"),
    }
}

/// Splits a frame header into `(len, crc)` and checks `len` against the limit.
fn parse_header(header: &[u8; FRAME_HEADER_BYTES]) -> Result<(u32, u32), WireError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge { len, max: MAX_FRAME_BYTES });
    }
    Ok((len, crc))
}

/// Checks the payload's checksum and decodes it; the payload must be consumed whole.
fn decode_payload<T: serde::de::DeserializeOwned>(
    expected_crc: u32,
    payload: &[u8],
) -> Result<T, WireError> {
    let actual = crc32fast::hash(payload);
    if actual != expected_crc {
        return Err(WireError::Checksum { expected: expected_crc, actual });
    }
    decode_checked_payload(payload)
}

/// Decodes a payload whose checksum passed; it must be consumed whole.
fn decode_checked_payload<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    let (value, consumed) = bincode::serde::decode_from_slice(payload, bincode_config())
        .map_err(|error| WireError::Decode(error.to_string()))?;
    if consumed != payload.len() {
        return Err(WireError::Decode(format!(
            "{} trailing bytes after the value",
            payload.len() - consumed
        )));
    }
    Ok(value)
}

/// Decodes one frame from the front of `buf`: `Ok(None)` if `buf` holds only part of
/// a frame, else the value and the number of bytes consumed. Pure, for fuzzing.
///
/// # Errors
/// `TooLarge` (checked from the header alone, before anything is allocated),
/// `Checksum`, or `Decode`.
pub fn decode_frame<T: serde::de::DeserializeOwned>(
    buf: &[u8],
) -> Result<Option<(T, usize)>, WireError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let (len, crc) = parse_header(header)?;
    let frame_len = FRAME_HEADER_BYTES + len as usize;
    if buf.len() < frame_len {
        return Ok(None);
    }
    let value = decode_payload(crc, &buf[FRAME_HEADER_BYTES..frame_len])?;
    Ok(Some((value, frame_len)))
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
///
/// # Errors
/// `Truncated` if the stream ends inside a frame; `TooLarge` (before the payload
/// buffer is allocated), `Checksum`, `Decode`, or `Io`.
pub async fn read_frame<T, R>(reader: &mut R) -> Result<Option<T>, WireError>
where
    T: serde::de::DeserializeOwned,
    R: tokio::io::AsyncRead + Unpin,
{
    match read_payload(reader).await? {
        None => Ok(None),
        Some(payload) => decode_checked_payload(&payload).map(Some),
    }
}

/// Reads the first frame of a connection: the hello, or the reason it is not one
/// this node can answer (naming the protocol of an older rangedb's hello).
///
/// # Errors
/// As `read_frame`; `Decode` with the reason for a hello of another layout.
pub async fn read_hello<R>(reader: &mut R) -> Result<Option<Hello>, WireError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let Some(payload) = read_payload(reader).await? else { return Ok(None) };
    decode_hello(&payload).map(Some)
}

/// `read_hello`'s decoding, pure (for fuzzing).
///
/// # Errors
/// `Decode` naming the protocol version of a legacy hello, or why the bytes are none.
pub fn decode_hello(payload: &[u8]) -> Result<Hello, WireError> {
    let error = match decode_checked_payload::<Hello>(payload) {
        Ok(hello) if hello.min_version >= 3 => return Ok(hello),
        Ok(_) => WireError::Decode("a hello with a version range below 3".to_string()),
        Err(error) => error,
    };
    match decode_checked_payload::<LegacyHello>(payload) {
        Ok(LegacyHello::Peer { version, from, .. }) => Err(WireError::Decode(format!(
            "peer {from} speaks protocol {version} (an older rangedb); this node speaks \
             {PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION}: upgrade it (docs/DESIGN.md, 6.4)"
        ))),
        Ok(LegacyHello::Client { version }) => Err(WireError::Decode(format!(
            "a client speaks protocol {version} (an older rangedb); this node speaks \
             {PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION}: upgrade the client"
        ))),
        Err(_) => Err(error),
    }
}

/// The payload of one frame, its checksum checked; `Ok(None)` on a clean end of
/// stream between frames.
async fn read_payload<R>(reader: &mut R) -> Result<Option<Vec<u8>>, WireError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;

    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        let read = reader.read(&mut header[filled..]).await?;
        if read == 0 {
            return if filled == 0 { Ok(None) } else { Err(WireError::Truncated) };
        }
        filled += read;
    }
    let (len, crc) = parse_header(&header)?;
    let mut payload = vec![0u8; len as usize];
    match reader.read_exact(&mut payload).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(WireError::Truncated)
        }
        Err(error) => return Err(WireError::Io(error)),
    }
    let actual = crc32fast::hash(&payload);
    if actual != crc {
        return Err(WireError::Checksum { expected: crc, actual });
    }
    Ok(Some(payload))
}

/// `read_frame` for a buffered reader: a frame that is whole in the buffer is decoded
/// in place (no payload buffer to allocate, zero and fill); others are read as by
/// `read_frame`.
///
/// # Errors
/// As `read_frame`.
pub async fn read_frame_buffered<T, R>(reader: &mut R) -> Result<Option<T>, WireError>
where
    T: serde::de::DeserializeOwned,
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;

    let buffered = reader.fill_buf().await?;
    if buffered.is_empty() {
        return Ok(None);
    }
    if let Some((value, used)) = decode_frame(buffered)? {
        reader.consume(used);
        return Ok(Some(value));
    }
    read_frame(reader).await
}

/// Writes one frame (not flushed).
///
/// # Errors
/// `TooLarge` if the value's payload exceeds `MAX_FRAME_BYTES` (nothing is written),
/// or `Io`.
pub async fn write_frame<T, W>(writer: &mut W, value: &T) -> Result<(), WireError>
where
    T: Serialize,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;

    let frame = try_encode_frame(value)?;
    writer.write_all(&frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::NodeId;
    use crate::raft::{ConfState, Entry, EntryFormat, Message, MessageBody, SnapshotMeta};
    use crate::range::descriptor::{RangeDescriptor, RangeId};
    use crate::range::kv::COMMAND_FORMAT;
    use crate::range::kv::{KeyValue, RequestId};

    fn descriptor() -> RangeDescriptor {
        RangeDescriptor {
            id: RangeId(7),
            start: b"g".to_vec(),
            end: Some(b"n".to_vec()),
            generation: 3,
            replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
        }
    }

    fn kv(key: &[u8]) -> KeyValue {
        KeyValue { key: key.to_vec(), value: vec![0, 255, 10], revision: 42 }
    }

    fn requests() -> Vec<Request> {
        let request_id = RequestId { client: u64::MAX, seq: 9 };
        vec![
            Request::Put { key: b"k".to_vec(), value: b"v".to_vec(), request_id },
            Request::Put { key: vec![0; 1000], value: vec![], request_id },
            Request::Delete { key: b"k".to_vec(), request_id },
            Request::Get {
                key: b"k".to_vec(),
                revision: None,
                consistency: ReadConsistency::Linearizable,
            },
            Request::Get {
                key: b"k".to_vec(),
                revision: Some(5),
                consistency: ReadConsistency::Lease,
            },
            Request::Scan { start: vec![], end: None, limit: 0, revision: None },
            Request::Scan {
                start: b"a".to_vec(),
                end: Some(b"z".to_vec()),
                limit: 10,
                revision: Some(3),
            },
            Request::RangeTable,
            Request::Status,
            Request::ConfigSet {
                name: "history_revisions".into(),
                value: "all".into(),
                request_id,
            },
            Request::MetaScan { start: b"_/".to_vec(), end: b"_0".to_vec(), limit: 10 },
        ]
    }

    fn responses() -> Vec<Response> {
        vec![
            Response::Put { revision: 1 },
            Response::Delete { revision: 2, existed: true },
            Response::Get { kv: None, read_revision: 3, lock: None },
            Response::Get { kv: Some(kv(b"a")), read_revision: 3, lock: None },
            Response::Scan {
                kvs: vec![kv(b"a"), kv(b"b")],
                resume: Some(b"n".to_vec()),
                read_revision: 4,
                locks: vec![],
            },
            Response::Scan { kvs: vec![], resume: None, read_revision: 0, locks: vec![] },
            Response::RangeTable {
                ranges: vec![descriptor()],
                addresses: vec![(NodeId(1), "127.0.0.1:7001".to_string())],
            },
            Response::Status(NodeStatus {
                node: NodeId(1),
                address: "127.0.0.1:7001".to_string(),
                cluster: 5,
                identity: 6,
                identities: vec![(NodeId(1), 6), (NodeId(2), 7)],
                peers: vec![(NodeId(2), "127.0.0.1:7002".to_string(), false)],
                removed: vec![],
                ranges: vec![RangeStatus {
                    descriptor: descriptor(),
                    role: "Leader".to_string(),
                    leader: Some(NodeId(1)),
                    term: 5,
                    commit: 10,
                    applied: 9,
                    last_index: 11,
                    voters: vec![NodeId(1), NodeId(2)],
                    outgoing: vec![],
                    learners: vec![],
                    matched: vec![(NodeId(1), 5), (NodeId(2), 4)],
                    settings: crate::range::settings::RangeSettings::default(),
                    keys: 3,
                    bytes: 40,
                }],
            }),
            Response::NotLeader {
                range: RangeId(1),
                leader: Some(NodeId(2)),
                address: Some("x:1".into()),
            },
            Response::NotLeader { range: RangeId(1), leader: None, address: None },
            Response::RevisionUnavailable { revision: 1, first: 2, last: 3 },
            Response::Invalid { reason: "empty key".to_string() },
            Response::Unavailable { reason: "shutting down".to_string() },
        ]
    }

    fn message_bodies() -> Vec<MessageBody> {
        let meta = SnapshotMeta {
            index: 10,
            term: 2,
            conf_state: ConfState { voters: vec![NodeId(1), NodeId(2)], learners: vec![] },
        };
        vec![
            MessageBody::PreVote { last_index: 1, last_term: 1 },
            MessageBody::PreVoteResponse { reject: true },
            MessageBody::Vote { last_index: 1, last_term: 1, transfer: true },
            MessageBody::VoteResponse { reject: false },
            MessageBody::Append {
                prev_index: 4,
                prev_term: 1,
                entries: vec![
                    Entry { term: 2, index: 5, format: EntryFormat::NOOP, data: vec![].into() },
                    Entry {
                        term: 2,
                        index: 6,
                        format: COMMAND_FORMAT,
                        data: b"put".to_vec().into(),
                    },
                ],
                commit: 4,
            },
            MessageBody::AppendResponse { reject: true, index: 3, hint_index: 2, hint_term: 1 },
            MessageBody::Heartbeat { commit: 9, context: 1 },
            MessageBody::HeartbeatResponse { context: 1, tick: 300, incarnation: 7 },
            MessageBody::Snapshot {
                meta,
                total_len: 100,
                offset: 0,
                chunk: vec![1; 50],
                done: false,
            },
            MessageBody::SnapshotResponse { index: 10, next_offset: 50, reject: false },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndex { context: 77, lease: true },
            MessageBody::ReadIndexResponse { context: 77, index: 12, reject: false },
            MessageBody::Quiesce { commit: 12 },
        ]
    }

    fn peer_batch() -> PeerBatch {
        let envelopes = message_bodies()
            .into_iter()
            .enumerate()
            .map(|(i, body)| Envelope {
                range: RangeId(i as u64),
                message: Message { from: NodeId(1), to: NodeId(2), term: 3, body },
            })
            .collect();
        PeerBatch { envelopes }
    }

    fn round_trip<T>(value: &T)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let frame = encode_frame(value);
        let (decoded, consumed) = decode_frame::<T>(&frame).unwrap().expect("complete frame");
        assert_eq!(&decoded, value);
        assert_eq!(consumed, frame.len());
    }

    /// A hello of protocol 1 or 2 is named as such; versions that do not meet are
    /// refused with both ranges; garbage stays an error.
    #[test]
    fn hellos_of_older_protocols_and_ranges_that_do_not_meet() {
        let payload = |value: &dyn Fn() -> Vec<u8>| value();
        let legacy = LegacyHello::Peer { version: 2, cluster: 5, from: NodeId(3) };
        let bytes = payload(&|| bincode::serde::encode_to_vec(&legacy, bincode_config()).unwrap());
        let error = decode_hello(&bytes).unwrap_err().to_string();
        assert!(error.contains("peer n3 speaks protocol 2"), "{error}");
        let legacy = LegacyHello::Client { version: 2 };
        let bytes = payload(&|| bincode::serde::encode_to_vec(&legacy, bincode_config()).unwrap());
        let error = decode_hello(&bytes).unwrap_err().to_string();
        assert!(error.contains("a client speaks protocol 2"), "{error}");
        assert!(decode_hello(b"GET / HTTP/1.1").is_err());

        let newer = Hello { min_version: 9, max_version: 12, role: HelloRole::Client };
        let error = newer.negotiate().unwrap_err();
        assert!(error.contains("it speaks 9 to 12"), "{error}");
        let wide = Hello { min_version: 3, max_version: 12, role: HelloRole::Client };
        assert_eq!(wide.negotiate(), Ok(PROTOCOL_VERSION));
        let hello = Hello::new(HelloRole::Client);
        let bytes = bincode::serde::encode_to_vec(&hello, bincode_config()).unwrap();
        assert_eq!(decode_hello(&bytes).unwrap(), hello);
    }

    #[test]
    fn wire_round_trip_every_shape() {
        for (id, request) in requests().into_iter().enumerate() {
            round_trip(&ClientRequest { id: id as u64, request });
        }
        for (id, response) in responses().into_iter().enumerate() {
            round_trip(&ClientResponse { id: id as u64, response });
        }
        round_trip(&Hello::new(HelloRole::Peer {
            cluster: 99,
            from: NodeId(4),
            identity: 5,
            founding: 6,
        }));
        round_trip(&Hello::new(HelloRole::Client));
        round_trip(&HelloReply::Refused { reason: "no".into(), permanent: true });
        round_trip(&peer_batch());
        round_trip(&PeerBatch { envelopes: vec![] });
    }

    #[test]
    fn wire_decode_consumes_one_frame_of_several() {
        let mut buf = encode_frame(&Hello::new(HelloRole::Client));
        let first_len = buf.len();
        buf.extend(encode_frame(&peer_batch()));
        let (hello, consumed) = decode_frame::<Hello>(&buf).unwrap().unwrap();
        assert_eq!(hello, Hello::new(HelloRole::Client));
        assert_eq!(consumed, first_len);
        let (batch, _) = decode_frame::<PeerBatch>(&buf[consumed..]).unwrap().unwrap();
        assert_eq!(batch, peer_batch());
    }

    #[test]
    fn wire_every_truncation_is_incomplete() {
        let frame = encode_frame(&peer_batch());
        for cut in 0..frame.len() {
            let result = decode_frame::<PeerBatch>(&frame[..cut]);
            assert!(matches!(result, Ok(None)), "prefix of {cut} bytes: {result:?}");
        }
        // Truncating the payload but fixing up the header must be an error, not a panic.
        for cut in 0..frame.len() - FRAME_HEADER_BYTES {
            let payload = &frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + cut];
            let mut shortened = (cut as u32).to_le_bytes().to_vec();
            shortened.extend(crc32fast::hash(payload).to_le_bytes());
            shortened.extend(payload);
            let result = decode_frame::<PeerBatch>(&shortened);
            assert!(matches!(result, Err(WireError::Decode(_))), "payload of {cut}: {result:?}");
        }
    }

    #[test]
    fn wire_every_bit_flip_is_rejected() {
        let frame = encode_frame(&ClientRequest { id: 1, request: requests().remove(0) });
        for bit in 0..frame.len() * 8 {
            let mut damaged = frame.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let result = decode_frame::<ClientRequest>(&damaged);
            assert!(!matches!(result, Ok(Some(_))), "bit {bit} flipped was accepted");
        }
    }

    #[test]
    fn wire_oversize_length_rejected_from_header() {
        let mut header = (MAX_FRAME_BYTES + 1).to_le_bytes().to_vec();
        header.extend([0u8; 4]);
        let result = decode_frame::<PeerBatch>(&header);
        assert!(
            matches!(result, Err(WireError::TooLarge { len, .. }) if len == MAX_FRAME_BYTES + 1)
        );
        let mut header = u32::MAX.to_le_bytes().to_vec();
        header.extend([0u8; 4]);
        assert!(matches!(decode_frame::<Hello>(&header), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn wire_inner_length_prefix_cannot_allocate_past_limit() {
        // A payload whose Vec length prefix claims ~2^60 elements, with a valid crc.
        // PeerBatch is one field, the Vec; 253 is bincode's varint marker for "a u64
        // follows".
        let mut payload = vec![253u8];
        payload.extend((1u64 << 60).to_le_bytes());
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend(crc32fast::hash(&payload).to_le_bytes());
        frame.extend(&payload);
        assert!(matches!(decode_frame::<PeerBatch>(&frame), Err(WireError::Decode(_))));
    }

    #[test]
    fn wire_oversize_value_refused_on_encode() {
        let big = ClientRequest {
            id: 1,
            request: Request::Put {
                key: b"k".to_vec(),
                value: vec![0; MAX_FRAME_BYTES as usize + 1],
                request_id: RequestId { client: 1, seq: 1 },
            },
        };
        assert!(matches!(try_encode_frame(&big), Err(WireError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn wire_buffered_reads_decode_whole_split_and_truncated_frames() {
        let requests: Vec<ClientRequest> = (0..20)
            .map(|id| ClientRequest {
                id,
                request: Request::Put {
                    key: format!("key{id}").into_bytes(),
                    value: vec![id as u8; (id as usize * 37) % 300],
                    request_id: RequestId { client: 7, seq: id },
                },
            })
            .collect();
        let mut stream: Vec<u8> = requests.iter().flat_map(encode_frame).collect();
        // Buffers smaller than a frame, about one, and holding all of them.
        for capacity in [3, 8, 64, 200, 1 << 16] {
            let mut reader = tokio::io::BufReader::with_capacity(capacity, stream.as_slice());
            for expected in &requests {
                let got: ClientRequest = read_frame_buffered(&mut reader).await.unwrap().unwrap();
                assert_eq!(&got, expected, "capacity {capacity}");
            }
            let end = read_frame_buffered::<ClientRequest, _>(&mut reader).await.unwrap();
            assert!(end.is_none(), "clean end of stream, capacity {capacity}");
        }
        // A frame cut short, and a corrupted one, are errors whatever the buffer.
        let whole = stream.len();
        stream.truncate(whole - 5);
        let mut reader = tokio::io::BufReader::with_capacity(1 << 16, stream.as_slice());
        for _ in 0..19 {
            read_frame_buffered::<ClientRequest, _>(&mut reader).await.unwrap().unwrap();
        }
        let cut = read_frame_buffered::<ClientRequest, _>(&mut reader).await;
        assert!(matches!(cut, Err(WireError::Truncated)), "{cut:?}");
        stream[FRAME_HEADER_BYTES + 1] ^= 0x40;
        for capacity in [4, 1 << 16] {
            let mut reader = tokio::io::BufReader::with_capacity(capacity, stream.as_slice());
            let bad = read_frame_buffered::<ClientRequest, _>(&mut reader).await;
            assert!(matches!(bad, Err(WireError::Checksum { .. })), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn wire_read_frame_from_stream() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let batch = peer_batch();
        let sent = batch.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            write_frame(&mut client, &Hello::new(HelloRole::Client)).await.unwrap();
            write_frame(&mut client, &sent).await.unwrap();
            // A partial frame, then end of stream.
            let frame = encode_frame(&sent);
            client.write_all(&frame[..10]).await.unwrap();
        });
        let hello: Hello = read_frame(&mut server).await.unwrap().unwrap();
        assert_eq!(hello, Hello::new(HelloRole::Client));
        let received: PeerBatch = read_frame(&mut server).await.unwrap().unwrap();
        assert_eq!(received, batch);
        writer.await.unwrap();
        let truncated = read_frame::<PeerBatch, _>(&mut server).await;
        assert!(matches!(truncated, Err(WireError::Truncated)), "{truncated:?}");

        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert!(read_frame::<Hello, _>(&mut server).await.unwrap().is_none());

        let (mut client, mut server) = tokio::io::duplex(64);
        let mut header = (MAX_FRAME_BYTES + 1).to_le_bytes().to_vec();
        header.extend([0u8; 4]);
        tokio::io::AsyncWriteExt::write_all(&mut client, &header).await.unwrap();
        let result = read_frame::<Hello, _>(&mut server).await;
        assert!(matches!(result, Err(WireError::TooLarge { .. })));
    }
}
