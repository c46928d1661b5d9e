//! The listener: one port for peers and clients. The first frame of a connection
//! (`Hello`) says which it is; peer frames go to the event loop as batches, client
//! requests go there one by one with a handle to the connection's outbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::node::event_loop::Event;
use crate::node::replica::ReplyTo;
use crate::raft::NodeId;
use crate::wire::{
    encode_frame, read_frame, read_frame_buffered, try_encode_frame, ClientRequest, ClientResponse,
    Hello, PeerBatch, Response, PROTOCOL_VERSION,
};

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Who may connect as a peer.
#[derive(Clone)]
pub struct Admission {
    pub me: NodeId,
    pub cluster: u64,
    pub peers: Arc<BTreeMap<NodeId, String>>,
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
                eprintln!("{}: accept: {error}", admission.me);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let events = events.clone();
        let admission = admission.clone();
        tokio::spawn(async move {
            if let Err(reason) = serve_connection(stream, events, &admission).await {
                eprintln!("{}: connection from {address}: {reason}; closed", admission.me);
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
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_frame::<Hello, _>(&mut reader)).await
    {
        Err(_) => return Err("no hello within 5 s".into()),
        Ok(Ok(Some(hello))) => hello,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(error)) => return Err(format!("bad hello frame: {error}")),
    };
    match hello {
        Hello::Peer { version, cluster, from } => {
            if version != PROTOCOL_VERSION {
                return Err(format!(
                    "peer speaks protocol {version}, this node {PROTOCOL_VERSION}"
                ));
            }
            if cluster != admission.cluster {
                return Err(format!(
                    "peer {from} belongs to cluster {cluster:#x}, not {:#x}",
                    admission.cluster
                ));
            }
            if from == admission.me || !admission.peers.contains_key(&from) {
                return Err(format!("{from} is not a member of this cluster"));
            }
            serve_peer(reader, from, events).await
        }
        Hello::Client { version } => {
            if version != PROTOCOL_VERSION {
                return Err(format!(
                    "client speaks protocol {version}, this node {PROTOCOL_VERSION}"
                ));
            }
            serve_client(reader, writer, events).await
        }
    }
}

/// Bytes read from a connection at once.
const READ_BUFFER_BYTES: usize = 64 << 10;

type Reader = BufReader<RawReader>;

async fn serve_peer(
    mut reader: Reader,
    from: NodeId,
    events: mpsc::Sender<Event>,
) -> Result<(), String> {
    if events.send(Event::PeerConnected { from }).await.is_err() {
        return Ok(());
    }
    loop {
        match read_frame_buffered::<PeerBatch, _>(&mut reader).await {
            Ok(Some(batch)) => {
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
) -> Result<(), String> {
    let (outbox, responses) = mpsc::unbounded_channel::<ClientResponse>();
    let writer_task = tokio::spawn(write_responses(writer, responses));
    let result = loop {
        match read_frame_buffered::<ClientRequest, _>(&mut reader).await {
            Ok(Some(ClientRequest { id, request })) => {
                let reply = ReplyTo { outbox: outbox.clone(), id };
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
