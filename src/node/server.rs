//! The listener: one port for peers and clients. The first frame of a connection
//! (`Hello`) says which it is; peer frames go to the event loop as batches, client
//! requests go there one by one with a handle to the connection's outbox.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::logging::{Admit, RateLimiter};
use crate::node::event_loop::Event;
use crate::node::members::{self, Members, SharedMembers};
use crate::node::replica::ReplyTo;
use crate::node::telemetry::{Operation, Telemetry};
use crate::raft::NodeId;
use crate::wire::{
    encode_frame, read_frame_buffered, read_hello, try_encode_frame, write_frame, ClientRequest,
    ClientResponse, HelloReply, HelloRole, PeerBatch, Response,
};

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Who may connect as a peer: the members of this cluster, each with the data
/// directory identity the cluster recorded for it.
#[derive(Clone)]
pub struct Admission {
    pub me: NodeId,
    /// This node's data directory identity.
    pub identity: u64,
    pub cluster: u64,
    /// Members, their identities and who was removed. An identity that is absent (a
    /// cluster upgraded from data directory version 1) is learned from the member's
    /// first connection and persisted by `learned` before the connection is accepted.
    pub members: SharedMembers,
    pub learned: Arc<RecordMembers>,
    /// An incoming peer connection that delivers nothing for this long is closed
    /// (`peer_silence_timeout`).
    pub peer_silence: Duration,
    /// Where client requests are counted and timed (`ReplyTo::send`).
    pub telemetry: Arc<Telemetry>,
    /// Closed connections are logged once per kind and interval, then counted (a
    /// port scanner or a peer retrying a refused hello would otherwise write a line
    /// per attempt).
    pub log_limiter: Arc<ConnectionLogLimiter>,
}

/// The rate limiter of the listener's log lines, with its time origin.
pub struct ConnectionLogLimiter {
    started: tokio::time::Instant,
    limiter: std::sync::Mutex<RateLimiter<&'static str>>,
}

/// At most one line per kind of closed connection in this interval (then a count).
const CONNECTION_LOG_INTERVAL_MS: u64 = 10_000;

impl Default for ConnectionLogLimiter {
    fn default() -> ConnectionLogLimiter {
        ConnectionLogLimiter::new()
    }
}

impl ConnectionLogLimiter {
    pub fn new() -> ConnectionLogLimiter {
        ConnectionLogLimiter {
            started: tokio::time::Instant::now(),
            limiter: std::sync::Mutex::new(RateLimiter::new(CONNECTION_LOG_INTERVAL_MS)),
        }
    }

    /// Logs that the connection from `address` was closed for `reason`, unless a
    /// connection closed for the same kind of reason was logged in the interval.
    fn closed(&self, me: NodeId, address: std::net::SocketAddr, reason: &str) {
        let kind = closed_kind(reason);
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut limiter = self.limiter.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let summaries = limiter.take_summaries(now_ms);
        let admitted = limiter.admit(kind, now_ms);
        drop(limiter);
        for (kind, count) in summaries {
            info!(
                node = me.0,
                kind,
                suppressed = count,
                "{me}: {count} more connections closed ({kind}) in the last 10 s"
            );
        }
        if let Admit::Log { suppressed } = admitted {
            info!(
                node = me.0,
                kind, suppressed, "{me}: connection from {address}: {reason}; closed"
            );
        }
    }
}

/// The kind of a closed connection's reason, the rate limiter's key (a fixed set).
fn closed_kind(reason: &str) -> &'static str {
    if reason.starts_with("bad hello") || reason.contains("sent a bad frame") {
        "bad frame"
    } else if reason.starts_with("no hello") {
        "no hello"
    } else if reason.contains("sent nothing for") {
        "silent peer"
    } else {
        "refused or ended"
    }
}

/// How long an incoming peer connection may deliver nothing before it is closed: ten
/// ping intervals (a live peer sends at least one frame per `PING_TICKS`), at least
/// 2 s. A connection that stalls (a partition: the peer's TCP retransmits with a
/// backoff that grows to seconds, and after the heal it first delivers what was stuck,
/// oldest first) would otherwise keep its backlog between the nodes for seconds after
/// the network is back (simulation seed 1219: 5.7 s without a leader). Closed, the
/// peer's next write fails and it connects again, and Raft resends what matters.
pub fn peer_silence_timeout(tick_ms: u64) -> Duration {
    let pings = crate::node::liveness::PING_TICKS * tick_ms * 10;
    Duration::from_millis(pings.max(2_000))
}

/// Persists the members (the cluster metadata) before a change is relied on; the
/// error is the reason.
pub type RecordMembers = dyn Fn(&Members) -> Result<(), String> + Send + Sync;

/// What to do with a peer's connection after the reply.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerAdmission {
    /// Serve it as the peer's link.
    Serve,
    /// Close it: the reply was all (a refusal, or a founder told its cluster).
    Close,
}

impl Admission {
    /// The answer to a peer's hello (protocol version already agreed on).
    /// `member`: a member's link (`HelloRole::Member`), which may come from a node
    /// added by a change this node has not applied yet: one of this cluster with an
    /// id it does not know is accepted (its identity is recorded when the change that
    /// added it is applied).
    pub fn admit_peer(
        &self,
        version: u32,
        cluster: u64,
        from: NodeId,
        identity: u64,
        member: bool,
    ) -> (HelloReply, PeerAdmission) {
        let refuse = |reason: String| {
            (HelloReply::Refused { reason, permanent: true }, PeerAdmission::Close)
        };
        let mut members = members::write(&self.members);
        if members.removed.contains(&from) {
            let reason = format!(
                "{from} was removed from cluster {:016x} (`rangedb node remove`); to serve \
                 again it must start with an empty data directory and be added as a new node",
                self.cluster
            );
            return (HelloReply::Removed { reason }, PeerAdmission::Close);
        }
        let unknown = !members.addresses.contains_key(&from);
        if member && unknown && from != self.me && cluster == self.cluster {
            return (self.accepted(version, vec![]), PeerAdmission::Serve);
        }
        if from == self.me || unknown {
            return refuse(format!("{from} is not a member of cluster {:016x}", self.cluster));
        }
        if cluster != 0 && cluster != self.cluster {
            return refuse(format!(
                "{from} belongs to cluster {cluster:016x}; {} belongs to {:016x}",
                self.me, self.cluster
            ));
        }
        match members.identities.get(&from) {
            Some(&known) if known != identity => {
                return refuse(format!(
                    "{from} of cluster {:016x} has data directory identity {known:016x}, this \
                     connection {identity:016x}: its data directory is not the one the \
                     cluster knows (wiped or replaced), and it may lack writes it \
                     acknowledged, so it must not rejoin as {from}. Restore its data \
                     directory, or start it with `--join <member address>` and run \
                     `rangedb node replace {} <its address>` (or `node remove {}` then \
                     `node add`)",
                    self.cluster, from.0, from.0
                ));
            }
            Some(_) => {}
            None => {
                members.identities.insert(from, identity);
                if let Err(error) = (self.learned)(&members) {
                    members.identities.remove(&from);
                    let reason = format!("cannot record {from}'s identity: {error}");
                    return (
                        HelloReply::Refused { reason, permanent: false },
                        PeerAdmission::Close,
                    );
                }
            }
        }
        if cluster == 0 {
            // A founder that has not learned its cluster yet: tell it, then close.
            let identities =
                members.identities.iter().map(|(id, identity)| (*id, *identity)).collect();
            return (self.accepted(version, identities), PeerAdmission::Close);
        }
        (self.accepted(version, vec![]), PeerAdmission::Serve)
    }

    /// The reply accepting a connection.
    pub fn accepted(&self, version: u32, identities: Vec<(NodeId, u64)>) -> HelloReply {
        HelloReply::Accepted {
            version,
            cluster: self.cluster,
            node: self.me,
            identity: self.identity,
            identities,
        }
    }
}

// madsim's simulated TcpStream has no `into_split`; the generic split works on both.
#[cfg(not(madsim))]
type RawReader = tokio::net::tcp::OwnedReadHalf;
#[cfg(not(madsim))]
type Writer = tokio::net::tcp::OwnedWriteHalf;
#[cfg(madsim)]
type RawReader = tokio::io::ReadHalf<TcpStream>;
#[cfg(madsim)]
type Writer = tokio::io::WriteHalf<TcpStream>;

#[cfg(not(madsim))]
fn split(stream: TcpStream) -> (RawReader, Writer) {
    stream.into_split()
}
#[cfg(madsim)]
fn split(stream: TcpStream) -> (RawReader, Writer) {
    tokio::io::split(stream)
}

/// Accepts connections until the task is aborted.
pub async fn accept_loop(listener: TcpListener, events: mpsc::Sender<Event>, admission: Admission) {
    loop {
        let (stream, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically EMFILE: back off instead of spinning.
                warn!(node = admission.me.0, "{}: accept: {error}", admission.me);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let events = events.clone();
        let admission = admission.clone();
        tokio::spawn(async move {
            if let Err(reason) = serve_connection(stream, events, &admission).await {
                admission.log_limiter.closed(admission.me, address, &reason);
            }
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    events: mpsc::Sender<Event>,
    admission: &Admission,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = split(stream);
    // Buffered: one recv takes every frame the peer pipelined, instead of two
    // syscalls (header, payload) per frame.
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let mut writer = writer;
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut reader)).await {
        Err(_) => return Err("no hello within 5 s".into()),
        Ok(Ok(Some(hello))) => hello,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(error)) => {
            let reason = format!("bad hello: {error}");
            refuse(&mut writer, &reason).await;
            return Err(reason);
        }
    };
    let version = match hello.negotiate() {
        Ok(version) => version,
        Err(reason) => {
            refuse(&mut writer, &reason).await;
            return Err(reason);
        }
    };
    match hello.role {
        HelloRole::Peer { cluster, from, identity, founding: _ } => {
            let (reply, then) = admission.admit_peer(version, cluster, from, identity, false);
            write_frame(&mut writer, &reply).await.map_err(|e| format!("hello reply: {e}"))?;
            writer.flush().await.map_err(|e| format!("hello reply: {e}"))?;
            match (then, reply) {
                (PeerAdmission::Serve, _) => {
                    let silence = admission.peer_silence;
                    serve_peer(reader, from, None, events, &admission.members, silence).await
                }
                (PeerAdmission::Close, HelloReply::Refused { reason, .. })
                | (PeerAdmission::Close, HelloReply::Removed { reason }) => Err(reason),
                (PeerAdmission::Close, _) => Ok(()),
            }
        }
        HelloRole::Member { cluster, from, identity, address } => {
            let (reply, then) = admission.admit_peer(version, cluster, from, identity, true);
            write_frame(&mut writer, &reply).await.map_err(|e| format!("hello reply: {e}"))?;
            writer.flush().await.map_err(|e| format!("hello reply: {e}"))?;
            match (then, reply) {
                (PeerAdmission::Serve, _) => {
                    let (members, silence) = (&admission.members, admission.peer_silence);
                    serve_peer(reader, from, Some(address), events, members, silence).await
                }
                (PeerAdmission::Close, HelloReply::Refused { reason, .. })
                | (PeerAdmission::Close, HelloReply::Removed { reason }) => Err(reason),
                (PeerAdmission::Close, _) => Ok(()),
            }
        }
        HelloRole::Client => {
            let reply = admission.accepted(version, vec![]);
            write_frame(&mut writer, &reply).await.map_err(|e| format!("hello reply: {e}"))?;
            writer.flush().await.map_err(|e| format!("hello reply: {e}"))?;
            serve_client(reader, writer, events, Arc::clone(&admission.telemetry)).await
        }
    }
}

/// Tells the other end why its connection is closed (best effort).
async fn refuse(writer: &mut Writer, reason: &str) {
    let refused = HelloReply::Refused { reason: reason.to_string(), permanent: true };
    if write_frame(writer, &refused).await.is_ok() {
        let _ = writer.flush().await;
    }
}

/// Bytes read from a connection at once.
const READ_BUFFER_BYTES: usize = 64 << 10;

type Reader = BufReader<RawReader>;

async fn serve_peer(
    mut reader: Reader,
    from: NodeId,
    address: Option<String>,
    events: mpsc::Sender<Event>,
    members: &SharedMembers,
    silence: Duration,
) -> Result<(), String> {
    if events.send(Event::PeerConnected { from, address }).await.is_err() {
        return Ok(());
    }
    loop {
        let read = read_frame_buffered::<PeerBatch, _>(&mut reader);
        let Ok(frame) = crate::env::timer::timeout(silence, read).await else {
            #[cfg(madsim)]
            crate::env::sim_hooks::sometimes("silent peer connection closed");
            return Err(format!("peer {from} sent nothing for {silence:?}: connection closed"));
        };
        match frame {
            Ok(Some(batch)) => {
                if members::read(members).removed.contains(&from) {
                    // Closed: its next hello is answered `Removed`, and it stops.
                    return Err(format!("{from} was removed from the cluster"));
                }
                if events.send(Event::Peer { from, batch }).await.is_err() {
                    return Ok(()); // The node is stopping.
                }
            }
            Ok(None) => return Ok(()),
            Err(error) => return Err(format!("peer {from} sent a bad frame: {error}")),
        }
    }
}

async fn serve_client(
    mut reader: Reader,
    writer: Writer,
    events: mpsc::Sender<Event>,
    telemetry: Arc<Telemetry>,
) -> Result<(), String> {
    let (outbox, responses) = mpsc::unbounded_channel::<ClientResponse>();
    let writer_task = tokio::spawn(write_responses(writer, responses));
    let result = loop {
        match read_frame_buffered::<ClientRequest, _>(&mut reader).await {
            Ok(Some(ClientRequest { id, request })) => {
                let reply = ReplyTo {
                    outbox: outbox.clone(),
                    id,
                    operation: Operation::of(&request),
                    started: tokio::time::Instant::now(),
                    telemetry: Arc::clone(&telemetry),
                };
                if events.send(Event::Client { request, reply }).await.is_err() {
                    break Ok(());
                }
            }
            Ok(None) => break Ok(()),
            Err(error) => break Err(format!("client sent a bad frame: {error}")),
        }
    };
    // Let the writer drain replies still owed on this connection, then stop.
    drop(outbox);
    let _ = writer_task.await;
    result
}

/// Writes responses as they come, coalescing whatever is queued into one flush.
async fn write_responses(writer: Writer, mut responses: mpsc::UnboundedReceiver<ClientResponse>) {
    let mut writer = BufWriter::with_capacity(64 << 10, writer);
    while let Some(response) = responses.recv().await {
        if write_response(&mut writer, response).await.is_err() {
            return;
        }
        while let Ok(response) = responses.try_recv() {
            if write_response(&mut writer, response).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}

/// Writes one response; one too large for a frame is replaced by an error reply.
async fn write_response<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    response: ClientResponse,
) -> Result<(), std::io::Error> {
    let id = response.id;
    let frame = match try_encode_frame(&response) {
        Ok(frame) => frame,
        Err(error) => {
            let response = Response::Invalid { reason: format!("reply too large: {error}") };
            // A short error reply always fits in a frame.
            encode_frame(&ClientResponse { id, response })
        }
    };
    writer.write_all(&frame).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_connections_are_limited_by_a_fixed_set_of_kinds() {
        assert_eq!(closed_kind("bad hello: frame too large"), "bad frame");
        assert_eq!(closed_kind("client sent a bad frame: checksum"), "bad frame");
        assert_eq!(closed_kind("peer n2 sent a bad frame: checksum"), "bad frame");
        assert_eq!(closed_kind("no hello within 5 s"), "no hello");
        assert_eq!(closed_kind("peer n2 sent nothing for 2s: connection closed"), "silent peer");
        assert_eq!(closed_kind("n4 is not a member of cluster 00ff"), "refused or ended");
    }
}
