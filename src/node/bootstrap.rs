//! Founding a cluster: what a node whose data directory belongs to no cluster does
//! before it may run a single replica.
//!
//! `rangedb server` with no `--peers` (or only itself) creates a single-node cluster
//! at once. With several `--peers`, every named node is a founder and the one with the
//! lowest id is the creator:
//!
//! ```text
//! every founder:  dials every other one: Hello{cluster 0, from, identity, founding}
//! creator:        once every other founder has said hello with cluster 0 and the
//!                 same founding flags, draws the cluster id, stores CLUSTER with
//!                 every founder's identity, and starts
//! the others:     store CLUSTER when a reply says cluster X and lists their own
//!                 identity (the creator's, or any member's: server.rs), and start
//! ```
//!
//! Only the creator creates, and only when every founder is new, so one cluster is
//! created once. A node whose data directory was wiped gets a new identity and starts
//! here again: a member that knows its old identity refuses it for good
//! (`Admission::admit_peer`), and it stops with that reason instead of voting as the
//! replica it used to be (which could elect a leader lacking acknowledged writes). A
//! wiped creator meets peers that belong to a cluster, and stops too. Until founding
//! completes the node runs no replica and answers clients that it is not ready.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tracing::info;

use super::{NodeError, ServerConfig};
use crate::env::random_u64;
use crate::hash::Fnv64;
use crate::raft::NodeId;
use crate::storage::{ClusterMeta, DataDir};
use crate::wire::{
    read_frame, read_hello, write_frame, ClientRequest, ClientResponse, Hello, HelloReply,
    HelloRole, Request, Response,
};

/// Time between rounds of hellos to the founders.
const DIAL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a dial or a hello may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the node says whom it is still waiting for.
const WAITING_REPORT: Duration = Duration::from_secs(10);

/// The digest of the flags a cluster is founded with: founders must agree on them.
pub fn founding_digest(peers: &BTreeMap<NodeId, String>, split_keys: &[Vec<u8>]) -> u64 {
    let mut hash = Fnv64::default();
    for (id, address) in peers {
        hash.write(&id.0.to_le_bytes());
        hash.write(&(address.len() as u64).to_le_bytes());
        hash.write(address.as_bytes());
    }
    for key in split_keys {
        hash.write(&(key.len() as u64).to_le_bytes());
        hash.write(key);
    }
    hash.0
}

/// The metadata of a new single-node cluster (stored before it is returned).
///
/// # Errors
/// Storing it failed.
pub fn create_single(
    config: &ServerConfig,
    data_dir: &DataDir,
    split_keys: Vec<Vec<u8>>,
) -> Result<ClusterMeta, NodeError> {
    let meta = ClusterMeta {
        cluster_id: random_u64().max(1),
        node_id: config.node_id,
        peers: config.peers.clone(),
        identities: BTreeMap::from([(config.node_id, data_dir.identity())]),
        split_keys,
        founders: vec![config.node_id],
        removed: Default::default(),
    };
    data_dir.store_meta(&meta)?;
    Ok(meta)
}

/// What founding has come to so far, shared by the acceptor and dialer tasks.
struct Founding {
    me: NodeId,
    identity: u64,
    digest: u64,
    peers: BTreeMap<NodeId, String>,
    creator: NodeId,
    /// Identities of the founders that said hello with cluster 0 (latest wins).
    fresh: BTreeMap<NodeId, u64>,
    /// Cluster id and identities a member told us, listing our own identity.
    adopted: Option<(u64, BTreeMap<NodeId, u64>)>,
    /// A reason founding can never succeed.
    fatal: Option<String>,
}

impl Founding {
    fn all_fresh(&self) -> bool {
        self.peers.keys().all(|id| *id == self.me || self.fresh.contains_key(id))
    }
}

type Shared = Arc<(Mutex<Founding>, Notify)>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Founding> {
    shared.0.lock().expect("founding lock is never poisoned")
}

/// Founds (creator) or learns (the others) the cluster of a multi-node `--peers`,
/// answering founders' hellos on `listener` meanwhile. Returns the stored metadata,
/// or None if `shutdown` came first.
///
/// # Errors
/// `NodeError::Refused` when a member refuses this node for good (its data directory
/// is not the one the cluster knows) or the flags differ; storage errors.
pub async fn found(
    listener: &TcpListener,
    config: &ServerConfig,
    data_dir: &DataDir,
    split_keys: Vec<Vec<u8>>,
    restoring: u64,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Option<ClusterMeta>, NodeError> {
    let me = config.node_id;
    let creator = *config.peers.keys().next().expect("validated: --peers lists this node");
    let founding = Founding {
        me,
        identity: data_dir.identity(),
        // Founders restoring a backup must all restore the same one (0: none).
        digest: founding_digest(&config.peers, &split_keys)
            ^ if restoring == 0 { 0 } else { crate::hash::splitmix64(restoring) },
        peers: config.peers.clone(),
        creator,
        fresh: BTreeMap::new(),
        adopted: None,
        fatal: None,
    };
    let shared: Shared = Arc::new((Mutex::new(founding), Notify::new()));
    info!(
        node = me.0,
        "rangedb node {}: data directory {} belongs to no cluster yet: founding one with {} \
         (creator {creator}; every founder must be started with the same --peers and \
         --split-keys)",
        me.0,
        config.data_dir.display(),
        peer_list(&config.peers, me),
    );
    let mut tasks = Vec::new();
    for (peer, address) in &config.peers {
        if *peer != me {
            tasks.push(tokio::spawn(dial_loop(shared.clone(), *peer, address.clone())));
        }
    }
    tokio::pin!(shutdown);
    let mut report = tokio::time::interval(WAITING_REPORT);
    report.tick().await;
    let outcome = loop {
        {
            let mut founding = lock(&shared);
            if let Some(reason) = founding.fatal.take() {
                break Err(NodeError::Refused(reason));
            }
            if let Some((cluster_id, identities)) = founding.adopted.take() {
                break Ok((cluster_id, identities));
            }
            if me == creator && founding.all_fresh() {
                let mut identities = founding.fresh.clone();
                identities.insert(me, founding.identity);
                break Ok((random_u64().max(1), identities));
            }
        }
        let notified = shared.1.notified();
        // Biased: a fixed branch order (an unbiased select! draws from a per-thread
        // generator, which would make a simulated run depend on what ran before it).
        tokio::select! {
            biased;
            () = &mut shutdown => {
                for task in &tasks {
                    task.abort();
                }
                return Ok(None);
            }
            () = notified => {}
            _ = report.tick() => {
                let founding = lock(&shared);
                let missing: BTreeMap<NodeId, String> = founding
                    .peers
                    .iter()
                    .filter(|(id, _)| **id != me && !founding.fresh.contains_key(id))
                    .map(|(id, address)| (*id, address.clone()))
                    .collect();
                info!(
                    node = me.0,
                    "rangedb node {}: still founding; no hello yet from {}",
                    me.0,
                    peer_list(&missing, me)
                );
            }
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(answer(stream, shared.clone()));
                }
            }
        }
    };
    for task in &tasks {
        task.abort();
    }
    let (cluster_id, identities) = outcome?;
    let meta = ClusterMeta {
        cluster_id,
        node_id: me,
        peers: config.peers.clone(),
        identities,
        split_keys,
        founders: config.peers.keys().copied().collect(),
        removed: Default::default(),
    };
    data_dir.store_meta(&meta)?;
    let how = if me == creator { "created" } else { "joined" };
    info!(node = me.0, "rangedb node {}: {how} cluster {cluster_id:016x}", me.0);
    Ok(Some(meta))
}

fn peer_list(peers: &BTreeMap<NodeId, String>, me: NodeId) -> String {
    let names: Vec<String> = peers
        .iter()
        .filter(|(id, _)| **id != me)
        .map(|(id, address)| format!("{id} ({address})"))
        .collect();
    names.join(", ")
}

/// Answers one connection while founding.
async fn answer(mut stream: TcpStream, shared: Shared) {
    let Ok(Ok(Some(hello))) = tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut stream)).await
    else {
        return;
    };
    let reply = {
        let mut founding = lock(&shared);
        founding_reply(&mut founding, &hello)
    };
    shared.1.notify_one();
    let _ = write_frame(&mut stream, &reply).await;
    let _ = stream.flush().await;
}

/// The reply of a founding node to `hello`, recording what it learns.
fn founding_reply(founding: &mut Founding, hello: &Hello) -> HelloReply {
    let refused = |reason: String, permanent| HelloReply::Refused { reason, permanent };
    let version = match hello.negotiate() {
        Ok(version) => version,
        Err(reason) => return refused(reason, true),
    };
    let me = founding.me;
    let HelloRole::Peer { cluster, from, identity, founding: digest } = hello.role else {
        let reason = format!("{me} is not part of a cluster yet: it waits for its founders");
        return refused(reason, false);
    };
    if from == me || !founding.peers.contains_key(&from) {
        return refused(format!("{from} is not one of {me}'s founders"), true);
    }
    if cluster != 0 {
        if me == founding.creator {
            // The cluster exists, and only this node could have created it: with a data
            // directory that is gone.
            founding.fatal = Some(format!(
                "this node's data directory is new, but {from} belongs to cluster \
                 {cluster:016x}, which {me} created with a data directory that is gone \
                 (wiped or replaced). It must not rejoin as {me}: it may lack writes it \
                 acknowledged. Restore its data directory, or start it with `--join \
                 <member address>` and run `rangedb node replace {} <its address>`",
                me.0
            ));
        }
        // Our own hellos to the members learn whether we belong to it.
        return refused(format!("{me} is still learning its cluster"), false);
    }
    if digest != founding.digest {
        // Founding cannot succeed: both stop (whichever says hello first).
        let reason = format!(
            "{from} and {me} were started with different --peers or --split-keys; every \
             founder must be started with the same ones"
        );
        founding.fatal = Some(reason.clone());
        return refused(reason, true);
    }
    founding.fresh.insert(from, identity);
    HelloReply::Accepted {
        version,
        cluster: 0,
        node: me,
        identity: founding.identity,
        identities: vec![],
    }
}

/// Says hello to one founder until founding ends (the task is aborted).
async fn dial_loop(shared: Shared, peer: NodeId, address: String) {
    let (hello, me) = {
        let founding = lock(&shared);
        let role = HelloRole::Peer {
            cluster: 0,
            from: founding.me,
            identity: founding.identity,
            founding: founding.digest,
        };
        (Hello::new(role), founding.me)
    };
    loop {
        if let Some(reply) = dial(&address, &hello).await {
            let mut founding = lock(&shared);
            match reply {
                HelloReply::Accepted { cluster: 0, .. } => {}
                HelloReply::Accepted { cluster, identities, .. } => {
                    let identities: BTreeMap<NodeId, u64> = identities.into_iter().collect();
                    if identities.get(&me) == Some(&founding.identity) {
                        founding.adopted = Some((cluster, identities));
                    } else {
                        founding.fatal = Some(format!(
                            "{peer} belongs to cluster {cluster:016x}, which does not list this \
                             data directory as {me}'s"
                        ));
                    }
                    shared.1.notify_one();
                }
                HelloReply::Refused { reason, permanent: true }
                | HelloReply::Removed { reason } => {
                    founding.fatal = Some(format!("{peer} at {address} refused {me}: {reason}"));
                    shared.1.notify_one();
                }
                HelloReply::Refused { permanent: false, .. } => {}
            }
        }
        tokio::time::sleep(DIAL_INTERVAL).await;
    }
}

/// Joins an existing cluster (`rangedb server --join ADDR[,ADDR...]`): asks the
/// members at `join` (comma-separated, in turn: any one that is up will do) every
/// `DIAL_INTERVAL` whether this node was added (`rangedb node add`),
/// answering hellos meanwhile with its identity (which `node add` records), and stores
/// CLUSTER once told its id and the cluster. None when shut down first.
///
/// # Errors
/// `NodeError::Refused` when the member refuses this node for good (added with
/// another identity); storage errors.
pub async fn join(
    listener: &TcpListener,
    config: &ServerConfig,
    join: &str,
    data_dir: &DataDir,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Option<ClusterMeta>, NodeError> {
    let identity = data_dir.identity();
    info!(
        "rangedb: data directory {} belongs to no cluster yet: joining the cluster of {join} \
         as {} once a member adds it: `rangedb node add {} --endpoints {join}`",
        config.data_dir.display(),
        config.listen,
        config.listen,
    );
    tokio::pin!(shutdown);
    let mut report = tokio::time::interval(WAITING_REPORT);
    report.tick().await;
    let members: Vec<&str> = join.split(',').filter(|a| !a.is_empty()).collect();
    if members.is_empty() {
        return Err(NodeError::Config("--join names no member address".into()));
    }
    let mut turn = 0usize;
    let info = loop {
        let member = members[turn % members.len()];
        turn += 1;
        let request = Request::Join { identity, address: config.listen.clone() };
        let last_reason = match ask(member, request).await {
            Some(Response::Joined(info)) => break info,
            Some(Response::Invalid { reason }) => {
                return Err(NodeError::Refused(format!(
                    "{member} refused to add this node: {reason}"
                )))
            }
            Some(Response::Unavailable { reason }) => reason,
            Some(other) => format!("unexpected answer {other:?}"),
            None => format!("{member} cannot be reached"),
        };
        let pause = tokio::time::sleep(DIAL_INTERVAL);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(None),
                () = &mut pause => break,
                _ = report.tick() => info!("rangedb: still waiting to join: {last_reason}"),
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(answer_joining(stream, identity));
                    }
                }
            }
        }
    };
    let meta = ClusterMeta {
        cluster_id: info.cluster,
        node_id: info.node,
        peers: info.members.iter().map(|(id, address, _)| (*id, address.clone())).collect(),
        identities: info.members.iter().map(|(id, _, identity)| (*id, *identity)).collect(),
        split_keys: info.split_keys,
        founders: info.founders,
        removed: info.removed.into_iter().collect(),
    };
    data_dir.store_meta(&meta)?;
    info!(
        node = meta.node_id.0,
        "rangedb node {}: joined cluster {:016x}", meta.node_id.0, meta.cluster_id
    );
    Ok(Some(meta))
}

/// Answers a hello while waiting to join: clients (`rangedb node add`) learn this
/// node's identity; peers are told to retry (it has no replica yet).
async fn answer_joining(mut stream: TcpStream, identity: u64) {
    let Ok(Ok(Some(hello))) = tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut stream)).await
    else {
        return;
    };
    let reply = match (&hello.role, hello.negotiate()) {
        (_, Err(reason)) => HelloReply::Refused { reason, permanent: true },
        (HelloRole::Client, Ok(version)) => HelloReply::Accepted {
            version,
            cluster: 0,
            node: NodeId(0),
            identity,
            identities: vec![],
        },
        (HelloRole::Peer { .. } | HelloRole::Member { .. }, Ok(_)) => HelloReply::Refused {
            reason: "joining: not added yet or not started".into(),
            permanent: false,
        },
    };
    let _ = write_frame(&mut stream, &reply).await;
    let _ = stream.flush().await;
}

/// One client request to `address` and its answer; None if it cannot be reached.
async fn ask(address: &str, request: Request) -> Option<Response> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        write_frame(&mut stream, &Hello::new(HelloRole::Client)).await.ok()?;
        stream.flush().await.ok()?;
        match read_frame::<HelloReply, _>(&mut stream).await.ok()?? {
            HelloReply::Accepted { .. } => {}
            HelloReply::Refused { reason, .. } | HelloReply::Removed { reason } => {
                return Some(Response::Unavailable { reason })
            }
        }
        write_frame(&mut stream, &ClientRequest { id: 1, request }).await.ok()?;
        stream.flush().await.ok()?;
        let response = read_frame::<ClientResponse, _>(&mut stream).await.ok()??;
        Some(response.response)
    };
    tokio::time::timeout(HELLO_TIMEOUT, exchange).await.ok()?
}

/// One hello and its reply; None if the peer cannot be reached or answers nonsense.
async fn dial(address: &str, hello: &Hello) -> Option<HelloReply> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        write_frame(&mut stream, hello).await.ok()?;
        stream.flush().await.ok()?;
        read_frame::<HelloReply, _>(&mut stream).await.ok()?
    };
    tokio::time::timeout(HELLO_TIMEOUT, exchange).await.ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--join` with no address (the library's `ServerConfig`, which the CLI's checks
    /// do not guard) is a configuration error, not an index out of bounds.
    #[cfg(not(madsim))]
    #[tokio::test]
    async fn a_join_list_with_no_address_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk: Arc<dyn crate::env::Disk> = Arc::new(crate::env::real_disk::RealDisk);
        let data_dir = DataDir::open(disk, dir.path()).expect("data directory");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let config = ServerConfig::single_node("127.0.0.1:1", dir.path().to_path_buf());
        let joined = join(&listener, &config, ",", &data_dir, std::future::pending()).await;
        assert!(matches!(joined, Err(NodeError::Config(_))), "{joined:?}");
    }

    fn founding(me: u64) -> Founding {
        let peers: BTreeMap<NodeId, String> =
            (1..=3).map(|id| (NodeId(id), format!("n{id}"))).collect();
        Founding {
            me: NodeId(me),
            identity: 100 + me,
            digest: founding_digest(&peers, &[]),
            creator: NodeId(1),
            peers,
            fresh: BTreeMap::new(),
            adopted: None,
            fatal: None,
        }
    }

    fn peer_hello(cluster: u64, from: u64, identity: u64, digest: u64) -> Hello {
        Hello::new(HelloRole::Peer { cluster, from: NodeId(from), identity, founding: digest })
    }

    #[test]
    fn the_creator_counts_fresh_founders_with_the_same_flags() {
        let mut creator = founding(1);
        let digest = creator.digest;
        let reply = founding_reply(&mut creator, &peer_hello(0, 2, 102, digest));
        assert!(matches!(reply, HelloReply::Accepted { cluster: 0, .. }), "{reply:?}");
        assert!(!creator.all_fresh());
        founding_reply(&mut creator, &peer_hello(0, 3, 103, digest));
        assert!(creator.all_fresh());
        assert_eq!(creator.fatal, None);
        let reply = founding_reply(&mut creator, &peer_hello(0, 3, 103, digest ^ 1));
        assert!(matches!(reply, HelloReply::Refused { permanent: true, .. }), "{reply:?}");
        assert!(creator.fatal.is_some(), "founders with other flags stop both");
    }

    #[test]
    fn a_new_creator_meeting_an_existing_cluster_stops() {
        let mut creator = founding(1);
        let digest = creator.digest;
        let reply = founding_reply(&mut creator, &peer_hello(77, 2, 102, digest));
        assert!(matches!(reply, HelloReply::Refused { permanent: false, .. }), "{reply:?}");
        assert!(creator.fatal.as_deref().is_some_and(|r| r.contains("must not rejoin")));
        // A founder that is not the creator waits for its own hellos' answers instead.
        let mut other = founding(2);
        founding_reply(&mut other, &peer_hello(77, 1, 101, digest));
        assert_eq!(other.fatal, None);
    }

    #[test]
    fn strangers_and_clients_are_refused() {
        let mut node = founding(2);
        let digest = node.digest;
        let stranger = founding_reply(&mut node, &peer_hello(0, 9, 109, digest));
        assert!(matches!(stranger, HelloReply::Refused { permanent: true, .. }));
        let client = founding_reply(&mut node, &Hello::new(HelloRole::Client));
        assert!(matches!(client, HelloReply::Refused { permanent: false, .. }));
    }
}
