//! Production peer links over tokio TCP (simulated TCP under madsim).
//!
//! ```text
//!  node ── send(to, batch) ──► bounded queue (try_send: drop when full)
//!                                   │ one task per peer
//!                                   ▼
//!        connect (backoff 20 ms .. 1 s) ─► TCP_NODELAY ─► Hello ─► HelloReply
//!                                   │
//!        wake-up: drain everything queued ─► ONE PeerBatch frame ─► write_all
//! ```
//!
//! Links are one-way: this node only writes on the connections it opens and reads
//! its peers' messages on the connections they open to it (accepted by the server).
//! Any error drops the connection and the batch being written; Raft retransmits, so
//! losing messages is safe, while reordering within a link cannot happen.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::warn;

use crate::raft::{MessageBody, NodeId};
use crate::wire::{
    read_frame, try_encode_frame, try_encode_frame_sized, Envelope, Hello, HelloReply, HelloRole,
    PeerBatch, WireError, MAX_FRAME_BYTES,
};

use super::Network;

/// Batches (one `send` call each) queued per peer before `send` starts dropping.
pub const PEER_QUEUE_BATCHES: usize = 1024;
/// First reconnect delay; doubles per failure up to `RECONNECT_BACKOFF_MAX`.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A connect attempt that takes longer than this counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The sending side of one peer link.
struct PeerLink {
    /// Where the peer listens.
    address: String,
    queue: mpsc::Sender<Vec<Envelope>>,
    /// True between a written hello and the first failed write.
    connected: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// One outgoing link per peer, each a task that connects (with backoff), sends the
/// hello and then one frame per wake-up holding everything queued since the last.
pub struct TcpNetwork {
    me: NodeId,
    cluster: u64,
    identity: u64,
    /// Where this node listens.
    address: String,
    links: std::sync::RwLock<BTreeMap<NodeId, PeerLink>>,
    removed: Arc<std::sync::Mutex<Option<String>>>,
}

impl TcpNetwork {
    /// Must be called inside a tokio runtime: spawns one task per peer. `peers` may
    /// include `me`, which is skipped (the node delivers its own messages locally).
    /// `identity` is this node's data directory's, sent in every hello.
    pub fn new(
        me: NodeId,
        cluster: u64,
        identity: u64,
        address: String,
        peers: BTreeMap<NodeId, String>,
    ) -> TcpNetwork {
        let network = TcpNetwork {
            me,
            cluster,
            identity,
            address,
            links: std::sync::RwLock::new(BTreeMap::new()),
            removed: Arc::default(),
        };
        for (peer, address) in peers {
            network.add_peer(peer, address);
        }
        network
    }

    fn link(&self, peer: NodeId, address: String) -> PeerLink {
        let address_of_link = address.clone();
        let (queue, receiver) = mpsc::channel(PEER_QUEUE_BATCHES);
        let connected = Arc::new(AtomicBool::new(false));
        let link = PeerTask {
            me: self.me,
            cluster: self.cluster,
            identity: self.identity,
            peer,
            address,
            receiver,
            connected: connected.clone(),
            refused: None,
            removed: Arc::clone(&self.removed),
            own_address: self.address.clone(),
        };
        let task = tokio::spawn(link.run());
        PeerLink { address: address_of_link, queue, connected, task }
    }

    fn links(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<NodeId, PeerLink>> {
        self.links.read().expect("links lock is never poisoned")
    }

    /// Stops every peer task and closes their connections. Also done on drop.
    pub fn shutdown(&self) {
        for link in self.links().values() {
            link.task.abort();
            link.connected.store(false, Ordering::Relaxed);
        }
    }
}

impl Drop for TcpNetwork {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Network for TcpNetwork {
    fn send(&self, to: NodeId, batch: Vec<Envelope>) {
        debug_assert_ne!(to, self.me, "messages to self are delivered locally, not sent");
        // An empty batch is still sent: it is the node's liveness ping.
        // An unknown peer (e.g. removed from the cluster) or a full queue drops the
        // batch: Raft retransmits whatever matters.
        if let Some(link) = self.links().get(&to) {
            // The simulation's duplication fault: a copy of this or an older batch follows.
            #[cfg(madsim)]
            let again = super::sim_hooks::duplicate(self.me, to, &batch);
            let _ = link.queue.try_send(batch);
            #[cfg(madsim)]
            if let Some(again) = again {
                let _ = link.queue.try_send(again);
            }
        }
    }

    fn is_connected(&self, to: NodeId) -> bool {
        self.links().get(&to).is_some_and(|link| link.connected.load(Ordering::Relaxed))
    }

    fn add_peer(&self, peer: NodeId, address: String) {
        if peer == self.me {
            return;
        }
        let mut links = self.links.write().expect("links lock is never poisoned");
        if links.get(&peer).is_some_and(|link| !link.task.is_finished() && link.address == address)
        {
            return; // Already linked.
        }
        // A new peer, or one at another address (a change adding it under an id that
        // a change not committed had given to another address): a new link.
        if let Some(old) = links.insert(peer, self.link(peer, address)) {
            old.task.abort();
        }
    }

    fn removed(&self) -> Option<String> {
        self.removed.lock().expect("removed lock is never poisoned").clone()
    }

    fn remove_peer(&self, peer: NodeId) {
        let mut links = self.links.write().expect("links lock is never poisoned");
        if let Some(link) = links.remove(&peer) {
            link.task.abort();
        }
    }
}

/// The task owning one peer's connection.
struct PeerTask {
    me: NodeId,
    cluster: u64,
    identity: u64,
    peer: NodeId,
    /// The last refusal reported, so a peer that keeps refusing is reported once.
    refused: Option<String>,
    /// Shared by every link: a peer said this node was removed from the cluster.
    removed: Arc<std::sync::Mutex<Option<String>>>,
    /// Where this node listens (sent in the hello).
    own_address: String,
    address: String,
    receiver: mpsc::Receiver<Vec<Envelope>>,
    connected: Arc<AtomicBool>,
}

/// Why a connection ended; `Closed` means the network was dropped: the task exits.
enum LinkEnd {
    Failed,
    Closed,
}

impl PeerTask {
    async fn run(mut self) {
        let mut backoff = RECONNECT_BACKOFF_MIN;
        loop {
            match self.connect().await {
                Some(stream) => {
                    backoff = RECONNECT_BACKOFF_MIN;
                    self.connected.store(true, Ordering::Relaxed);
                    let end = self.pump(stream).await;
                    self.connected.store(false, Ordering::Relaxed);
                    if let LinkEnd::Closed = end {
                        return;
                    }
                }
                None => {
                    if let LinkEnd::Closed = self.discard_for(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                }
            }
        }
    }

    /// Connects, writes the hello and reads the peer's answer; None on any failure. A
    /// refusal for good is reported on stderr (once until the reason changes).
    async fn connect(&mut self) -> Option<TcpStream> {
        let connect = TcpStream::connect(self.address.as_str());
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, connect).await.ok()?.ok()?;
        // Raft messages are small and latency-bound; batching happens above.
        stream.set_nodelay(true).ok()?;
        let role = HelloRole::Member {
            cluster: self.cluster,
            from: self.me,
            identity: self.identity,
            address: self.own_address.clone(),
        };
        let frame = try_encode_frame(&Hello::new(role)).ok()?;
        stream.write_all(&frame).await.ok()?;
        stream.flush().await.ok()?;
        let reply = read_frame::<HelloReply, _>(&mut stream);
        match tokio::time::timeout(CONNECT_TIMEOUT, reply).await.ok()?.ok()?? {
            HelloReply::Accepted { cluster, node, .. }
                if cluster == self.cluster && node == self.peer =>
            {
                self.refused = None;
                Some(stream)
            }
            HelloReply::Accepted { cluster, node, .. } => {
                let reason = format!("{node} of cluster {cluster:016x} answered");
                self.report_refusal(reason);
                None
            }
            // A refusal for good (another cluster, another identity) is reported; a
            // passing one (the peer is still founding its cluster) is only retried.
            HelloReply::Refused { reason, permanent: true } => {
                self.report_refusal(reason);
                None
            }
            HelloReply::Refused { permanent: false, .. } => None,
            HelloReply::Removed { reason } => {
                self.report_refusal(reason.clone());
                self.removed.lock().expect("removed lock is never poisoned").get_or_insert(reason);
                None
            }
        }
    }

    fn report_refusal(&mut self, reason: String) {
        if self.refused.as_ref() != Some(&reason) {
            warn!(
                node = self.me.0,
                peer = self.peer.0,
                "{}: {} at {} refused the link: {reason}",
                self.me,
                self.peer,
                self.address
            );
            self.refused = Some(reason);
        }
    }

    /// While the link is down, waits `delay` and drops what is queued: those messages
    /// would be stale by the time a connection exists, and Raft resends what matters.
    async fn discard_for(&mut self, delay: Duration) -> LinkEnd {
        let mut sleep = super::timer::sleep(delay);
        loop {
            // Biased (see `pump`): the deadline first, so a busy queue cannot starve it.
            tokio::select! {
                biased;
                _ = &mut sleep => return LinkEnd::Failed,
                batch = self.receiver.recv() => {
                    if batch.is_none() {
                        return LinkEnd::Closed;
                    }
                }
            }
        }
    }

    /// Writes queued messages until the connection fails or the network is dropped.
    async fn pump(&mut self, mut stream: TcpStream) -> LinkEnd {
        let mut probe = [0u8; 1];
        loop {
            // Biased: an unbiased select! starts at a branch drawn from tokio's
            // per-thread generator, seeded from a process-wide counter, so a simulated
            // run would depend on the threads that ran before it. The probe read first:
            // it is ready only once the connection is gone, so it cannot starve the queue.
            let first = tokio::select! {
                biased;
                // The peer never writes on this connection: any read result means
                // it closed (or broke) the connection.
                _ = stream.read(&mut probe) => return LinkEnd::Failed,
                batch = self.receiver.recv() => match batch {
                    Some(batch) => batch,
                    None => return LinkEnd::Closed,
                },
            };
            // The simulation's one-way latency: the batch (and what queues meanwhile)
            // waits, in order.
            #[cfg(madsim)]
            if let Some(delay) = super::sim_hooks::link_delay(self.me, self.peer) {
                tokio::time::sleep(delay).await;
            }
            // Coalesce: everything queued so far goes into one frame.
            let mut envelopes = first;
            while let Ok(more) = self.receiver.try_recv() {
                envelopes.extend(more);
            }
            if self.write_batch(&mut stream, envelopes).await.is_err() {
                return LinkEnd::Failed;
            }
        }
    }

    /// Writes the envelopes as one frame, or as several if one would exceed the frame
    /// limit. An envelope too large for any frame is dropped (a bug in the sender).
    async fn write_batch(
        &self,
        stream: &mut TcpStream,
        envelopes: Vec<Envelope>,
    ) -> Result<(), WireError> {
        let mut frames = Vec::new();
        encode_batches(envelopes, &mut frames);
        for frame in &frames {
            stream.write_all(frame).await?;
        }
        stream.flush().await?;
        Ok(())
    }
}

/// Peer frames are cut at about this size, well below `MAX_FRAME_BYTES`: jemalloc
/// hands allocations of 8 MiB and more straight back to the kernel, so every frame
/// that big (a learner catching up gets nothing else) page-faulted and zeroed its
/// whole buffer on both ends: the leader spent most of its CPU there and a 1 GiB
/// catch-up ran at ~29 MB/s.
const PEER_FRAME_TARGET_BYTES: usize = 4 << 20;

/// Encodes `envelopes` as PeerBatch frames of about `PEER_FRAME_TARGET_BYTES` at most,
/// halving the batch while it is bigger (or a frame too large). Frames come out in
/// message order.
fn encode_batches(envelopes: Vec<Envelope>, frames: &mut Vec<Vec<u8>>) {
    let count = envelopes.len();
    let capacity: usize = envelopes.iter().map(envelope_bytes_estimate).sum();
    if capacity > PEER_FRAME_TARGET_BYTES && count > 1 {
        let mut first = envelopes;
        let second = first.split_off(count / 2);
        encode_batches(first, frames);
        encode_batches(second, frames);
        return;
    }
    let batch = PeerBatch { envelopes };
    match try_encode_frame_sized(&batch, capacity) {
        Ok(frame) => frames.push(frame),
        Err(WireError::TooLarge { len, .. }) if count > 1 => {
            debug_assert!(len > MAX_FRAME_BYTES);
            let mut first = batch.envelopes;
            let second = first.split_off(count / 2);
            encode_batches(first, frames);
            encode_batches(second, frames);
        }
        Err(error) => {
            // One message alone does not fit a frame: the sender must chunk it.
            debug_assert!(false, "dropping an unsendable peer message: {error}");
        }
    }
}

/// About the encoded size of an envelope (its payload bytes plus a fixed allowance for
/// headers and varints), so a peer frame is allocated once instead of grown by doubling.
fn envelope_bytes_estimate(envelope: &Envelope) -> usize {
    const FIXED_BYTES: usize = 48;
    const PER_ENTRY_BYTES: usize = 24;
    FIXED_BYTES
        + match &envelope.message.body {
            MessageBody::Append { entries, .. } => {
                entries.iter().map(|e| e.data.len() + PER_ENTRY_BYTES).sum()
            }
            MessageBody::Snapshot { chunk, meta, .. } => {
                chunk.len() + 8 * (meta.conf_state.voters.len() + meta.conf_state.learners.len())
            }
            _ => 0,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Message, MessageBody};
    use crate::range::descriptor::RangeId;
    use crate::wire::read_frame;

    fn envelope(range: u64) -> Envelope {
        Envelope {
            range: RangeId(range),
            message: Message {
                from: NodeId(1),
                to: NodeId(2),
                term: 1,
                body: MessageBody::Heartbeat { commit: range, context: 0 },
            },
        }
    }

    #[tokio::test]
    async fn real_net_sends_hello_then_batches_and_reconnects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let peers = BTreeMap::from([(NodeId(1), "unused".to_string()), (NodeId(2), address)]);
        let network = TcpNetwork::new(NodeId(1), 77, 501, "127.0.0.1:1".into(), peers);
        assert!(!network.is_connected(NodeId(3)));
        let accept = |cluster, node| HelloReply::Accepted {
            version: crate::wire::PROTOCOL_VERSION,
            cluster,
            node: NodeId(node),
            identity: 502,
            identities: vec![],
        };

        // A node answering for another cluster, or another node, gets nothing.
        for wrong in [accept(78, 2), accept(77, 3)] {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _: Hello = read_frame(&mut stream).await.unwrap().unwrap();
            crate::wire::write_frame(&mut stream, &wrong).await.unwrap();
            stream.flush().await.unwrap();
            network.send(NodeId(2), vec![envelope(9)]);
            let end = read_frame::<PeerBatch, _>(&mut stream).await;
            assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
        }

        let (mut stream, _) = listener.accept().await.unwrap();
        let hello: Hello = read_frame(&mut stream).await.unwrap().unwrap();
        let role = HelloRole::Member {
            cluster: 77,
            from: NodeId(1),
            identity: 501,
            address: "127.0.0.1:1".into(),
        };
        assert_eq!(hello, Hello::new(role));
        crate::wire::write_frame(&mut stream, &accept(77, 2)).await.unwrap();
        stream.flush().await.unwrap();
        network.send(NodeId(2), vec![envelope(1), envelope(2)]);
        network.send(NodeId(2), vec![envelope(3)]);
        let mut received = Vec::new();
        while received.len() < 3 {
            let batch: PeerBatch = read_frame(&mut stream).await.unwrap().unwrap();
            received.extend(batch.envelopes);
        }
        assert_eq!(received, vec![envelope(1), envelope(2), envelope(3)]);
        assert!(network.is_connected(NodeId(2)));

        // The peer drops the connection: the link reconnects with a new hello.
        drop(stream);
        let (mut stream, _) = listener.accept().await.unwrap();
        let hello: Hello = read_frame(&mut stream).await.unwrap().unwrap();
        assert!(matches!(hello.role, HelloRole::Member { from: NodeId(1), .. }));
        crate::wire::write_frame(&mut stream, &accept(77, 2)).await.unwrap();
        stream.flush().await.unwrap();
        network.send(NodeId(2), vec![envelope(4)]);
        let batch: PeerBatch = read_frame(&mut stream).await.unwrap().unwrap();
        assert_eq!(batch.envelopes, vec![envelope(4)]);

        // Dropping the network closes the link.
        drop(network);
        let end = read_frame::<PeerBatch, _>(&mut stream).await;
        assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    }

    #[test]
    fn real_net_oversize_batch_is_split() {
        let big = |range| {
            let mut e = envelope(range);
            e.message.body = MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![crate::raft::Entry {
                    term: 1,
                    index: 1,
                    format: crate::raft::EntryFormat::NOOP,
                    data: vec![7; (MAX_FRAME_BYTES / 3) as usize].into(),
                }],
                commit: 0,
            };
            e
        };
        let mut frames = Vec::new();
        encode_batches(vec![big(1), big(2), big(3), big(4)], &mut frames);
        assert!(frames.len() >= 2);
        let mut ranges = Vec::new();
        for frame in &frames {
            let (batch, _) = crate::wire::decode_frame::<PeerBatch>(frame).unwrap().unwrap();
            ranges.extend(batch.envelopes.iter().map(|e| e.range.0));
        }
        assert_eq!(ranges, vec![1, 2, 3, 4]);
    }
}
