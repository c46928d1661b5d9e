//! One pipelined client connection to one node, and the pool of them.
//!
//! ```text
//!  call(request) ─► id ─► waiters[id] = oneshot ─► outbox ─► writer task ─► socket
//!                                                                             │
//!  caller ◄── oneshot ◄── waiters.remove(id) ◄── reader task ◄── frames ◄─────┘
//! ```
//!
//! Many requests are in flight on one connection at once; the reader task answers
//! each by id. The writer task writes every frame queued by the time it runs in one
//! write (one syscall for many pipelined requests: the bench's client spent 40% of its
//! CPU in one `sendto` per request), and it is never cancelled mid-frame. A request
//! still queued when its caller gives up is withdrawn and reported as not sent. When
//! the connection breaks, every request in flight on it fails and the pool opens a
//! new connection on the next use.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader, ReadHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::wire::{
    read_frame, read_frame_buffered, try_encode_frame, ClientRequest, ClientResponse, Hello,
    HelloReply, HelloRole, Request, Response,
};

/// How one request on one connection failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The request never left this process (connect failed, connection already
    /// closed, unencodable). `refused`: nothing listens at the address.
    NotSent { reason: String, refused: bool },
    /// The connection broke after the request may have been written.
    Broken { reason: String },
    /// No answer in time; the node may still process the request.
    TimedOut,
}

/// Requests waiting for their answer, and why the connection closed once it has.
#[derive(Default)]
struct Waiters {
    by_id: BTreeMap<u64, oneshot::Sender<Response>>,
    /// Set once; after that no request is accepted.
    closed: Option<String>,
}

/// A request frame waiting for the writer task, and whether it was written.
struct Outgoing {
    frame: Vec<u8>,
    state: Arc<AtomicU8>,
}

/// `Outgoing::state`: queued; taken by the writer (it may reach the node); withdrawn
/// by its caller (it never will).
const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

/// Withdraws a request the writer has not taken: true if it will never be sent.
fn withdraw(state: &AtomicU8) -> bool {
    state.compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire).is_ok()
}

/// Bytes the writer task gathers into one write at most.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// One open connection: many requests in flight, answered by id.
pub(crate) struct Connection {
    address: String,
    outbox: mpsc::UnboundedSender<Outgoing>,
    waiters: Arc<Mutex<Waiters>>,
    next_id: AtomicU64,
    /// Dropped with the connection, which stops the reader task.
    _stop_reader: oneshot::Sender<()>,
}

impl Connection {
    /// Connects, sends the client hello and starts the reader task.
    async fn open(address: &str, connect_timeout: Duration) -> Result<Connection, CallError> {
        let not_sent = |reason: String, refused| CallError::NotSent { reason, refused };
        let mut stream =
            match tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await {
                Err(_) => {
                    return Err(not_sent(
                        format!("connecting to {address} timed out after {connect_timeout:?}"),
                        false,
                    ))
                }
                Ok(Err(error)) => {
                    let refused = error.kind() == std::io::ErrorKind::ConnectionRefused;
                    return Err(not_sent(format!("cannot connect to {address}: {error}"), refused));
                }
                Ok(Ok(stream)) => stream,
            };
        let _ = stream.set_nodelay(true);
        let hello =
            try_encode_frame(&Hello::new(HelloRole::Client)).expect("the hello is a few bytes");
        let sent = async {
            stream.write_all(&hello).await?;
            stream.flush().await
        };
        if let Err(error) = sent.await {
            return Err(not_sent(format!("cannot send hello to {address}: {error}"), false));
        }
        match tokio::time::timeout(connect_timeout, read_frame::<HelloReply, _>(&mut stream)).await
        {
            Err(_) => {
                let reason =
                    format!("{address} did not answer the hello within {connect_timeout:?}");
                return Err(not_sent(reason, false));
            }
            Ok(Ok(Some(HelloReply::Accepted { .. }))) => {}
            Ok(Ok(Some(HelloReply::Refused { reason, .. } | HelloReply::Removed { reason }))) => {
                return Err(not_sent(format!("{address} refused the connection: {reason}"), false));
            }
            Ok(Ok(None)) => {
                let reason = format!("{address} closed the connection after the hello");
                return Err(not_sent(reason, false));
            }
            Ok(Err(error)) => {
                let reason = format!("{address} answered the hello with a bad frame: {error}");
                return Err(not_sent(reason, false));
            }
        }
        let (reader, writer) = tokio::io::split(stream);
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let (stop_reader, stopped) = oneshot::channel();
        tokio::spawn(read_responses(address.to_string(), reader, waiters.clone(), stopped));
        let (outbox, queued) = mpsc::unbounded_channel();
        tokio::spawn(write_requests(address.to_string(), writer, queued, waiters.clone()));
        Ok(Connection {
            address: address.to_string(),
            outbox,
            waiters,
            next_id: AtomicU64::new(1),
            _stop_reader: stop_reader,
        })
    }

    fn is_closed(&self) -> bool {
        self.waiters.lock().expect("waiters lock is never poisoned").closed.is_some()
    }

    /// Sends `request` and waits at most `timeout` for its answer.
    pub(crate) async fn call(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = try_encode_frame(&ClientRequest { id, request }).map_err(|error| {
            CallError::NotSent {
                reason: format!("cannot encode the request: {error}"),
                refused: false,
            }
        })?;
        let (answer, answered) = oneshot::channel();
        {
            let mut waiters = self.waiters.lock().expect("waiters lock is never poisoned");
            if let Some(reason) = &waiters.closed {
                return Err(CallError::NotSent { reason: reason.clone(), refused: false });
            }
            waiters.by_id.insert(id, answer);
        }
        let state = Arc::new(AtomicU8::new(QUEUED));
        if self.outbox.send(Outgoing { frame, state: Arc::clone(&state) }).is_err() {
            self.waiters.lock().expect("waiters lock is never poisoned").by_id.remove(&id);
            return Err(CallError::NotSent { reason: self.close_reason(), refused: false });
        }
        match crate::env::timer::timeout(timeout, answered).await {
            Ok(Ok(response)) => Ok(response),
            // The connection closed: if the writer never took the request, it was
            // never sent and may be retried anywhere.
            Ok(Err(_)) if withdraw(&state) => {
                Err(CallError::NotSent { reason: self.close_reason(), refused: false })
            }
            Ok(Err(_)) => Err(CallError::Broken { reason: self.close_reason() }),
            Err(_) => {
                self.waiters.lock().expect("waiters lock is never poisoned").by_id.remove(&id);
                if withdraw(&state) {
                    Err(CallError::NotSent {
                        reason: format!("{} was too busy to take the request", self.address),
                        refused: false,
                    })
                } else {
                    Err(CallError::TimedOut)
                }
            }
        }
    }

    fn close_reason(&self) -> String {
        let waiters = self.waiters.lock().expect("waiters lock is never poisoned");
        waiters.closed.clone().unwrap_or_else(|| format!("connection to {} closed", self.address))
    }
}

/// Marks the connection closed and fails every request waiting on it.
fn close_waiters(waiters: &Mutex<Waiters>, reason: String) {
    let failed = {
        let mut waiters = waiters.lock().expect("waiters lock is never poisoned");
        if waiters.closed.is_none() {
            waiters.closed = Some(reason);
        }
        std::mem::take(&mut waiters.by_id)
    };
    // Dropping the senders wakes every caller with an error.
    drop(failed);
}

/// The writer task: writes every request queued by the time it runs in one write,
/// until the connection is dropped or a write fails (which closes it).
async fn write_requests<W: tokio::io::AsyncWrite + Unpin>(
    address: String,
    mut writer: W,
    mut queued: mpsc::UnboundedReceiver<Outgoing>,
    waiters: Arc<Mutex<Waiters>>,
) {
    let mut batch = Vec::new();
    while let Some(first) = queued.recv().await {
        // Callers woken by the same batch of responses are runnable now: let them
        // queue their next requests first, so that one write carries them all (the
        // scheduler would otherwise run this task right after the first of them).
        tokio::task::yield_now().await;
        batch.clear();
        let mut next = Some(first);
        while let Some(outgoing) = next.take() {
            let taken =
                outgoing.state.compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire);
            if taken.is_ok() {
                batch.extend_from_slice(&outgoing.frame);
            }
            if batch.len() < WRITE_BATCH_BYTES {
                next = queued.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue; // Every request of this turn was withdrawn.
        }
        // The flush is a no-op on a real socket; madsim's sends on it.
        let written = async {
            writer.write_all(&batch).await?;
            writer.flush().await
        };
        if let Err(error) = written.await {
            close_waiters(&waiters, format!("connection to {address} failed: {error}"));
            return;
        }
    }
}

/// The reader task: hands each response to its waiter until the stream ends, fails
/// or the connection is dropped.
async fn read_responses(
    address: String,
    reader: ReadHalf<TcpStream>,
    waiters: Arc<Mutex<Waiters>>,
    mut stop: oneshot::Receiver<()>,
) {
    // Buffered: one recv takes every pipelined response that arrived.
    let mut reader = BufReader::with_capacity(64 << 10, reader);
    let reason = loop {
        // Biased, as every select! (`env/real_net.rs`, `pump`): no random branch order.
        let frame = tokio::select! {
            biased;
            _ = &mut stop => break format!("connection to {address} dropped"),
            frame = read_frame_buffered::<ClientResponse, _>(&mut reader) => frame,
        };
        match frame {
            Ok(Some(ClientResponse { id, response })) => {
                let waiter =
                    waiters.lock().expect("waiters lock is never poisoned").by_id.remove(&id);
                // No waiter: that request timed out and its caller left.
                if let Some(waiter) = waiter {
                    let _ = waiter.send(response);
                }
            }
            Ok(None) => break format!("{address} closed the connection"),
            Err(error) => break format!("connection to {address} failed: {error}"),
        }
    };
    close_waiters(&waiters, reason);
}

/// A slot per address so that connecting to one slow node does not hold up others.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

/// Open connections by node address, reopened on demand.
pub(crate) struct Pool {
    connect_timeout: Duration,
    slots: Mutex<BTreeMap<String, Slot>>,
}

impl Pool {
    pub(crate) fn new(connect_timeout: Duration) -> Pool {
        Pool { connect_timeout, slots: Mutex::new(BTreeMap::new()) }
    }

    /// The open connection to `address`, connecting if there is none.
    pub(crate) async fn get(&self, address: &str) -> Result<Arc<Connection>, CallError> {
        let slot = {
            let mut slots = self.slots.lock().expect("pool lock is never poisoned");
            slots.entry(address.to_string()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref() {
            if !connection.is_closed() {
                return Ok(connection.clone());
            }
        }
        *slot = None;
        let connection = Arc::new(Connection::open(address, self.connect_timeout).await?);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// One request to `address` with at most `timeout` for the whole exchange,
    /// including connecting.
    pub(crate) async fn call(
        &self,
        address: &str,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let started = tokio::time::Instant::now();
        let connect = tokio::time::timeout(timeout, self.get(address)).await;
        let connection = match connect {
            Ok(connection) => connection?,
            Err(_) => {
                return Err(CallError::NotSent {
                    reason: format!("connecting to {address} timed out after {timeout:?}"),
                    refused: false,
                })
            }
        };
        let remaining = timeout.saturating_sub(started.elapsed());
        connection.call(request, remaining).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ClientRequest, ReadConsistency};

    /// Records the size of every write.
    struct Recorder(Arc<Mutex<Vec<usize>>>);

    impl tokio::io::AsyncWrite for Recorder {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.lock().unwrap().push(buf.len());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn outgoing(id: u64) -> Outgoing {
        let request = Request::Get {
            key: vec![b'k'],
            revision: None,
            consistency: ReadConsistency::Linearizable,
        };
        let frame = try_encode_frame(&ClientRequest { id, request }).unwrap();
        Outgoing { frame, state: Arc::new(AtomicU8::new(QUEUED)) }
    }

    #[tokio::test]
    async fn queued_requests_go_out_in_one_write_and_withdrawn_ones_not_at_all() {
        let (outbox, queued) = mpsc::unbounded_channel();
        let mut states = Vec::new();
        let mut frame_bytes = 0;
        for id in 1..=10 {
            let request = outgoing(id);
            states.push(Arc::clone(&request.state));
            if id % 3 != 0 {
                frame_bytes += request.frame.len();
            }
            outbox.send(request).unwrap();
        }
        for state in states.iter().skip(2).step_by(3) {
            assert!(withdraw(state), "a queued request can be withdrawn");
        }
        drop(outbox);
        let writes = Arc::new(Mutex::new(Vec::new()));
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        write_requests("test".into(), Recorder(Arc::clone(&writes)), queued, waiters).await;
        assert_eq!(*writes.lock().unwrap(), vec![frame_bytes], "one write of the 7 left");
        for (i, state) in states.iter().enumerate() {
            assert_eq!(state.load(Ordering::Acquire), if i % 3 == 2 { WITHDRAWN } else { TAKEN });
            assert!(!withdraw(state), "a taken or withdrawn request cannot be withdrawn");
        }
    }

    // Real sockets only: madsim's simulated TCP never blocks a writer.
    #[cfg(not(madsim))]
    #[tokio::test]
    async fn a_request_stuck_behind_a_blocked_write_is_reported_not_sent() {
        // A node that takes the connection but never reads: the first large request
        // fills the socket buffers and blocks the writer, so the small one behind it
        // stays queued.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let _held = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            // Answers the hello, then reads nothing more.
            let _: crate::wire::Hello = read_frame(&mut stream).await.unwrap().unwrap();
            let accepted = HelloReply::Accepted {
                version: crate::wire::PROTOCOL_VERSION,
                cluster: 1,
                node: crate::raft::NodeId(1),
                identity: 1,
                identities: vec![],
            };
            crate::wire::write_frame(&mut stream, &accepted).await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(stream);
        });
        let connection =
            Arc::new(Connection::open(&address, Duration::from_secs(5)).await.unwrap());
        let big = Request::Put {
            key: b"big".to_vec(),
            value: vec![7; 4 << 20],
            request_id: crate::range::kv::RequestId { client: 1, seq: 1 },
        };
        let blocked = {
            let connection = Arc::clone(&connection);
            tokio::spawn(async move { connection.call(big, Duration::from_millis(500)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let small = Request::Get {
            key: b"k".to_vec(),
            revision: None,
            consistency: ReadConsistency::Linearizable,
        };
        let stuck = connection.call(small, Duration::from_millis(200)).await;
        assert!(
            matches!(&stuck, Err(CallError::NotSent { reason, .. }) if reason.contains("too busy")),
            "{stuck:?}"
        );
        assert_eq!(blocked.await.unwrap(), Err(CallError::TimedOut), "partly written: unknown");
    }
}
