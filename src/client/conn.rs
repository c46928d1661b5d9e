//! One pipelined client connection to one node, and the pool of them.
//!
//! ```text
//!  call(request) ─► id ─► waiters[id] = oneshot ─► writer (tokio Mutex) ─► socket
//!                                                                           │
//!  caller ◄── oneshot ◄── waiters.remove(id) ◄── reader task ◄── frames ◄───┘
//! ```
//!
//! Many requests are in flight on one connection at once; the reader task answers
//! each by id. When the connection breaks, every request in flight on it fails and
//! the pool opens a new connection on the next use.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::node::wire::{
    read_frame, try_encode_frame, ClientRequest, ClientResponse, Hello, Request, Response,
    PROTOCOL_VERSION,
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

/// One open connection: many requests in flight, answered by id.
pub(crate) struct Connection {
    address: String,
    writer: tokio::sync::Mutex<WriteHalf<TcpStream>>,
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
        let hello = try_encode_frame(&Hello::Client { version: PROTOCOL_VERSION })
            .expect("the hello is a few bytes");
        let sent = async {
            stream.write_all(&hello).await?;
            stream.flush().await
        };
        if let Err(error) = sent.await {
            return Err(not_sent(format!("cannot send hello to {address}: {error}"), false));
        }
        let (reader, writer) = tokio::io::split(stream);
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let (stop_reader, stopped) = oneshot::channel();
        tokio::spawn(read_responses(address.to_string(), reader, waiters.clone(), stopped));
        Ok(Connection {
            address: address.to_string(),
            writer: tokio::sync::Mutex::new(writer),
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
        // A frame cut short by the timeout would corrupt the stream for everyone
        // after it, so an interrupted write closes the connection.
        let write_started = AtomicBool::new(false);
        let write_finished = AtomicBool::new(false);
        let exchange = async {
            {
                let mut writer = self.writer.lock().await;
                write_started.store(true, Ordering::Relaxed);
                let written = async {
                    writer.write_all(&frame).await?;
                    writer.flush().await
                };
                if let Err(error) = written.await {
                    let reason = format!("connection to {} failed: {error}", self.address);
                    self.close(reason.clone());
                    return Err(CallError::Broken { reason });
                }
                write_finished.store(true, Ordering::Relaxed);
            }
            answered.await.map_err(|_| CallError::Broken { reason: self.close_reason() })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                self.waiters.lock().expect("waiters lock is never poisoned").by_id.remove(&id);
                let started = write_started.load(Ordering::Relaxed);
                if started && !write_finished.load(Ordering::Relaxed) {
                    self.close(format!("a write to {} was interrupted", self.address));
                }
                if started {
                    Err(CallError::TimedOut)
                } else {
                    Err(CallError::NotSent {
                        reason: format!("{} was too busy to take the request", self.address),
                        refused: false,
                    })
                }
            }
        }
    }

    fn close_reason(&self) -> String {
        let waiters = self.waiters.lock().expect("waiters lock is never poisoned");
        waiters.closed.clone().unwrap_or_else(|| format!("connection to {} closed", self.address))
    }

    fn close(&self, reason: String) {
        close_waiters(&self.waiters, reason);
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
        let frame = tokio::select! {
            _ = &mut stop => break format!("connection to {address} dropped"),
            frame = read_frame::<ClientResponse, _>(&mut reader) => frame,
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
