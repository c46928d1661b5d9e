//! Client tests against fake servers on 127.0.0.1:0 that answer from a script.

use std::sync::atomic::AtomicUsize;

use super::*;
use crate::raft::NodeId;
use crate::range::descriptor::RangeDescriptor;
use crate::wire::{
    read_frame, write_frame, ClientRequest, ClientResponse, Hello, NodeStatus, RangeStatus,
};

/// Answers a request, or None to never answer it.
type Script = Arc<dyn Fn(&Request) -> Option<Response> + Send + Sync>;

/// A fake node: records every request and answers by `script`.
struct FakeServer {
    address: String,
    requests: Arc<Mutex<Vec<Request>>>,
    accepted: Arc<AtomicUsize>,
}

impl FakeServer {
    async fn start(script: Script) -> FakeServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (log, count) = (requests.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(stream, script.clone(), log.clone()));
            }
        });
        FakeServer { address, requests, accepted }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn writes(&self) -> Vec<RequestId> {
        self.requests()
            .into_iter()
            .filter_map(|request| match request {
                Request::Put { request_id, .. } | Request::Delete { request_id, .. } => {
                    Some(request_id)
                }
                _ => None,
            })
            .collect()
    }
}

async fn serve(mut stream: tokio::net::TcpStream, script: Script, log: Arc<Mutex<Vec<Request>>>) {
    let hello: Hello = read_frame(&mut stream).await.unwrap().unwrap();
    assert_eq!(hello, Hello::new(crate::wire::HelloRole::Client));
    let accepted = crate::wire::HelloReply::Accepted {
        version: crate::wire::PROTOCOL_VERSION,
        cluster: 1,
        node: NodeId(1),
        identity: 1,
        identities: vec![],
    };
    write_frame(&mut stream, &accepted).await.unwrap();
    while let Ok(Some(ClientRequest { id, request })) = read_frame(&mut stream).await {
        log.lock().unwrap().push(request.clone());
        if let Some(response) = script(&request) {
            if write_frame(&mut stream, &ClientResponse { id, response }).await.is_err() {
                return;
            }
        }
    }
}

fn range(id: u64, start: &[u8], end: Option<&[u8]>, replicas: &[u64]) -> RangeDescriptor {
    RangeDescriptor {
        id: RangeId(id),
        start: start.to_vec(),
        end: end.map(<[u8]>::to_vec),
        generation: 1,
        replicas: replicas.iter().map(|id| NodeId(*id)).collect(),
    }
}

fn config(endpoints: &[&str], request_ms: u64) -> ClientConfig {
    ClientConfig {
        endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        request_timeout: Duration::from_millis(request_ms),
        attempt_timeout: Duration::from_millis(request_ms.min(2000) / 3),
        connect_timeout: Duration::from_millis(500),
        client_id: Some(99),
    }
}

/// A single-node table: one range over the whole keyspace held by node 1 at `address`.
fn single_table(address: &str) -> Response {
    Response::RangeTable {
        ranges: vec![range(1, b"", None, &[1])],
        addresses: vec![(NodeId(1), address.to_string())],
    }
}

/// A script for one node that serves the table at `table` and otherwise `answer`.
fn script(
    table: Arc<Mutex<Option<Response>>>,
    answer: impl Fn(&Request) -> Option<Response> + Send + Sync + 'static,
) -> Script {
    Arc::new(move |request| match request {
        Request::RangeTable => table.lock().unwrap().clone(),
        other => answer(other),
    })
}

#[tokio::test]
async fn client_put_get_delete_single_node() {
    let table = Arc::new(Mutex::new(None));
    let server = FakeServer::start(script(table.clone(), |request| match request {
        Request::Put { .. } => Some(Response::Put { revision: 7 }),
        Request::Get { key, .. } => Some(Response::Get {
            kv: Some(KeyValue { key: key.clone(), value: b"v".to_vec(), revision: 7 }),
            read_revision: 8,
            lock: None,
        }),
        Request::Delete { .. } => Some(Response::Delete { revision: 9, existed: true }),
        _ => None,
    }))
    .await;
    *table.lock().unwrap() = Some(single_table(&server.address));
    let client = Client::new(config(&[&server.address], 3000));
    assert_eq!(client.put(b"k", b"v").await, Ok(7));
    assert_eq!(client.get(b"k").await.unwrap().unwrap().value, b"v".to_vec());
    assert_eq!(client.delete(b"k").await, Ok(true));
    let writes = server.writes();
    assert_eq!(writes, vec![RequestId { client: 99, seq: 1 }, RequestId { client: 99, seq: 2 }]);
}

#[tokio::test]
async fn client_follows_not_leader_redirect() {
    let table = Arc::new(Mutex::new(None));
    let leader = FakeServer::start(script(table.clone(), |request| match request {
        Request::Put { .. } => Some(Response::Put { revision: 3 }),
        _ => None,
    }))
    .await;
    let leader_address = leader.address.clone();
    let follower = FakeServer::start(script(table.clone(), move |_| {
        Some(Response::NotLeader {
            range: RangeId(1),
            leader: Some(NodeId(2)),
            address: Some(leader_address.clone()),
        })
    }))
    .await;
    *table.lock().unwrap() = Some(Response::RangeTable {
        ranges: vec![range(1, b"", None, &[1, 2])],
        addresses: vec![(NodeId(1), follower.address.clone()), (NodeId(2), leader.address.clone())],
    });
    let client = Client::new(config(&[&follower.address], 3000));
    assert_eq!(client.put(b"k", b"v").await, Ok(3));
    assert_eq!(follower.writes(), vec![RequestId { client: 99, seq: 1 }]);
    assert_eq!(leader.writes(), vec![RequestId { client: 99, seq: 1 }]);
    // The leader is cached: the next write goes straight to it.
    assert_eq!(client.put(b"k2", b"v").await, Ok(3));
    assert_eq!(follower.writes().len(), 1);
    assert_eq!(leader.writes().len(), 2);
}

#[tokio::test]
async fn client_retries_not_leader_with_same_request_id() {
    let table = Arc::new(Mutex::new(None));
    let refusals = Arc::new(AtomicUsize::new(0));
    let server = FakeServer::start(script(table.clone(), move |request| match request {
        Request::Put { .. } if refusals.fetch_add(1, Ordering::Relaxed) < 2 => {
            Some(Response::NotLeader { range: RangeId(1), leader: None, address: None })
        }
        Request::Put { .. } => Some(Response::Put { revision: 11 }),
        _ => None,
    }))
    .await;
    *table.lock().unwrap() = Some(single_table(&server.address));
    let client = Client::new(config(&[&server.address], 3000));
    assert_eq!(client.put(b"k", b"v").await, Ok(11));
    let id = RequestId { client: 99, seq: 1 };
    assert_eq!(server.writes(), vec![id, id, id]);
}

#[tokio::test]
async fn client_connection_refused_is_unavailable_quickly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let client = Client::new(config(&[&address], 10_000));
    let started = Instant::now();
    let result = client.put(b"k", b"v").await;
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    match result {
        Err(ClientError::Unavailable { reason }) => assert!(reason.contains(&address), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(client.get(b"k").await, Err(ClientError::Unavailable { .. })));
}

#[tokio::test]
async fn client_unanswered_write_is_outcome_unknown() {
    let table = Arc::new(Mutex::new(None));
    let server = FakeServer::start(script(table.clone(), |_| None)).await;
    *table.lock().unwrap() = Some(single_table(&server.address));
    let client = Client::new(config(&[&server.address], 400));
    let result = client.put(b"k", b"v").await;
    assert!(matches!(result, Err(ClientError::OutcomeUnknown { .. })), "{result:?}");
    let writes = server.writes();
    assert!(!writes.is_empty());
    assert!(writes.iter().all(|id| *id == RequestId { client: 99, seq: 1 }));
    let result = client.get(b"k").await;
    assert!(matches!(result, Err(ClientError::Timeout { .. })), "{result:?}");
}

#[tokio::test]
async fn client_no_leader_before_deadline() {
    let table = Arc::new(Mutex::new(None));
    let server = FakeServer::start(script(table.clone(), |_| {
        Some(Response::NotLeader { range: RangeId(1), leader: None, address: None })
    }))
    .await;
    *table.lock().unwrap() = Some(single_table(&server.address));
    let client = Client::new(config(&[&server.address], 300));
    let result = client.get(b"k").await;
    assert!(matches!(result, Err(ClientError::NoLeader { range: RangeId(1), .. })), "{result:?}");
    // A write that only ever met NotLeader was not applied: not OutcomeUnknown.
    let result = client.put(b"k", b"v").await;
    assert!(matches!(result, Err(ClientError::NoLeader { .. })), "{result:?}");
}

#[tokio::test]
async fn client_scan_walks_ranges_until_limit() {
    let kv = |key: &[u8]| KeyValue { key: key.to_vec(), value: b"v".to_vec(), revision: 1 };
    let table = Arc::new(Mutex::new(None));
    let server = FakeServer::start(script(table.clone(), move |request| match request {
        Request::Scan { start, .. } if start.as_slice() < &b"m"[..] => Some(Response::Scan {
            kvs: vec![kv(b"a"), kv(b"b")],
            resume: Some(b"m".to_vec()),
            read_revision: 1,
            locks: vec![],
        }),
        Request::Scan { .. } => Some(Response::Scan {
            kvs: vec![kv(b"m"), kv(b"z")],
            resume: None,
            read_revision: 1,
            locks: vec![],
        }),
        _ => None,
    }))
    .await;
    *table.lock().unwrap() = Some(Response::RangeTable {
        ranges: vec![range(1, b"", Some(b"m"), &[1]), range(2, b"m", None, &[1])],
        addresses: vec![(NodeId(1), server.address.clone())],
    });
    let client = Client::new(config(&[&server.address], 3000));
    let all = client.scan(b"", None, 0).await.unwrap();
    let keys: Vec<&[u8]> = all.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"a"[..], b"b", b"m", b"z"]);
    let three = client.scan(b"", None, 3).await.unwrap();
    assert_eq!(three.len(), 3);
    let limits: Vec<u64> = server
        .requests()
        .into_iter()
        .filter_map(|request| match request {
            Request::Scan { limit, .. } => Some(limit),
            _ => None,
        })
        .collect();
    assert_eq!(limits, vec![0, 0, 3, 1]);
    // Stopping at `end` before the next range.
    assert_eq!(client.scan(b"", Some(b"c"), 0).await.unwrap().len(), 2);
}

#[tokio::test]
async fn client_rejects_bad_keys_locally() {
    let client = Client::new(config(&["127.0.0.1:1"], 1000));
    assert!(matches!(client.put(b"", b"v").await, Err(ClientError::Invalid { .. })));
    assert!(matches!(client.get(b"_/meta").await, Err(ClientError::Invalid { .. })));
    assert!(matches!(client.delete(b"_/x").await, Err(ClientError::Invalid { .. })));
}

#[tokio::test]
async fn client_pipelines_concurrent_requests_on_one_connection() {
    let table = Arc::new(Mutex::new(None));
    let server = FakeServer::start(script(table.clone(), |request| match request {
        Request::Get { key, .. } => Some(Response::Get {
            kv: Some(KeyValue { key: key.clone(), value: key.clone(), revision: 1 }),
            read_revision: 1,
            lock: None,
        }),
        _ => None,
    }))
    .await;
    *table.lock().unwrap() = Some(single_table(&server.address));
    let client = Client::new(config(&[&server.address], 3000));
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("key{i}").into_bytes();
            let kv = client.get(&key).await.unwrap().unwrap();
            assert_eq!(kv.value, key);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(server.accepted.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn client_status_reports_up_and_unreachable_nodes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = listener.local_addr().unwrap().to_string();
    drop(listener);
    let table = Arc::new(Mutex::new(None));
    let address = Arc::new(Mutex::new(String::new()));
    let own = address.clone();
    let peer = dead.clone();
    let server = FakeServer::start(script(table.clone(), move |request| match request {
        Request::Status => {
            let descriptor = range(1, b"", None, &[1]);
            Some(Response::Status(NodeStatus {
                node: NodeId(1),
                address: own.lock().unwrap().clone(),
                cluster: 1,
                identity: 11,
                identities: vec![(NodeId(1), 11), (NodeId(2), 12)],
                peers: vec![(NodeId(2), peer.clone(), false)],
                removed: vec![],
                ranges: vec![RangeStatus {
                    descriptor,
                    role: "Leader".to_string(),
                    leader: Some(NodeId(1)),
                    term: 2,
                    commit: 5,
                    applied: 5,
                    last_index: 5,
                    voters: vec![NodeId(1), NodeId(2)],
                    outgoing: vec![],
                    learners: vec![],
                    matched: vec![(NodeId(1), 5), (NodeId(2), 4)],
                    settings: crate::range::settings::RangeSettings::default(),
                    keys: 3,
                    bytes: 40,
                }],
            }))
        }
        _ => None,
    }))
    .await;
    *address.lock().unwrap() = server.address.clone();
    *table.lock().unwrap() = Some(single_table(&server.address));
    let client = Client::new(config(&[&server.address], 3000));
    let status = client.status().await;
    assert_eq!(status.nodes.len(), 2, "{status:?}");
    assert!(status.nodes[0].status.is_ok());
    assert_eq!(status.nodes[1].address, dead);
    assert!(status.nodes[1].status.is_err());
    let ranges = status.ranges();
    assert_eq!(ranges.len(), 1);
    assert_eq!(ranges[0].leader, Some(NodeId(1)));
}

#[test]
fn client_escape_shows_bytes_readably() {
    assert_eq!(escape(b"abc"), "abc");
    assert_eq!(escape(b"a\tb\n\\\x00\xff"), "a\\tb\\n\\\\\\x00\\xff");
}

#[tokio::test]
async fn client_skips_a_dead_endpoint() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = listener.local_addr().unwrap().to_string();
    drop(listener);
    let table = Arc::new(Mutex::new(None));
    let server = FakeServer::start(script(table.clone(), |request| match request {
        Request::Put { .. } => Some(Response::Put { revision: 5 }),
        _ => None,
    }))
    .await;
    *table.lock().unwrap() = Some(single_table(&server.address));
    let client = Client::new(config(&[&dead, &server.address], 3000));
    assert_eq!(client.put(b"k", b"v").await, Ok(5));
}

#[tokio::test]
async fn client_write_refused_by_shutting_down_node_is_outcome_unknown() {
    let table = Arc::new(Mutex::new(None));
    let server = FakeServer::start(script(table.clone(), |_| {
        Some(Response::Unavailable { reason: "shutting down".to_string() })
    }))
    .await;
    *table.lock().unwrap() = Some(single_table(&server.address));
    let client = Client::new(config(&[&server.address], 300));
    let result = client.put(b"k", b"v").await;
    assert!(matches!(result, Err(ClientError::OutcomeUnknown { .. })), "{result:?}");
}
