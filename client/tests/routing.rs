//! The client against fake nodes over real QUIC on loopback: seeds, routing by the ring,
//! routing around unreachable nodes, no automatic retry of requests whose outcome is
//! unknown, and the mapping of node errors. Each fake node is a transport server whose
//! answers the test scripts; every server binds 127.0.0.1:0 and is closed at the end.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use shoal_client::{Client, ClientConfig, ClientError, PlanId, RetryPolicy, TlsFiles};
use shoal_proto::layout::ClusterSettings;
use shoal_proto::wire::{
    answer_version, decode_request, encode_response_as, ClientRequest, ClientResponse, ClusterInfo,
    ClusterReply, ClusterRequest, ClusterStatus, GetReply, MemberAddress, MemberState,
    MemberStatus, ReplicaReply, Request, Response, StatusReport, TransferSummary, WireVersion,
    WriteReply, WIRE_VERSION,
};
use shoal_proto::{Actor, CausalContext, Dot, RequestError};
use shoal_ring::{Member, NodeId, Ring};
use shoal_transport::{certs, Endpoint, Handler, PeerRole, TlsIdentity, TransportConfig};

/// How a fake node answers.
#[derive(Clone, Debug)]
enum Mode {
    /// Like a healthy node.
    Normal,
    /// Every client request (but cluster info) gets this error.
    Fail(RequestError),
    /// Never answers puts (a write whose outcome the client cannot know).
    SilentOnWrites,
}

/// What the fake nodes share: the cluster info, each node's mode, and a log of
/// `(node, op)` for every client request received.
#[derive(Default)]
struct Shared {
    info: Mutex<Option<ClusterInfo>>,
    log: Mutex<Vec<(String, &'static str)>>,
    /// Errors the next keyed requests get, whichever node they reach, first one first.
    fail_next: Mutex<std::collections::VecDeque<RequestError>>,
    /// When set, a get with R below it answers "not found" with an empty context (a
    /// replica that missed every write), and one with R at or above it a context that
    /// covers every fake node's first dot.
    covered_from_r: Mutex<Option<u8>>,
    /// The R of every get received.
    read_rs: Mutex<Vec<Option<u8>>>,
    /// Every frame received: its wire version and the client requests it carried (0: it
    /// was refused for its version).
    frames: Mutex<Vec<(u16, usize)>>,
    /// When set, a frame is answered only with a permit from it (taken after the frame
    /// is logged, one per frame): a test holds answers back by giving none.
    gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// The node whose copy is newer than the others' in answers to replica reads (its
    /// context includes theirs; all equal when unset).
    differing_copy: Mutex<Option<String>>,
    /// The node whose copy is concurrent with the others' in answers to replica reads (a
    /// write of another actor, neither context including the other).
    concurrent_copy: Mutex<Option<String>>,
    /// The node that never answers replica reads (hung for them).
    silent_copy: Mutex<Option<String>>,
}

struct FakeNode {
    id: NodeId,
    actor: u64,
    /// The newest wire version it speaks, as a node of that release: a frame of a newer
    /// one is refused `UnsupportedVersion`.
    speaks: Mutex<u16>,
    mode: Mutex<Mode>,
    shared: Arc<Shared>,
}

impl FakeNode {
    fn answer(&self, request: ClientRequest) -> Option<ClientResponse> {
        self.shared
            .log
            .lock()
            .unwrap()
            .push((self.id.to_string(), request.op_name()));
        let mode = self.mode.lock().unwrap().clone();
        if let ClientRequest::ClusterInfo = request {
            return Some(ClientResponse::ClusterInfo(
                self.shared.info.lock().unwrap().clone().unwrap(),
            ));
        }
        if let Some(e) = self.shared.fail_next.lock().unwrap().pop_front() {
            return Some(ClientResponse::Error(e));
        }
        match mode {
            Mode::Fail(e) => return Some(ClientResponse::Error(e)),
            Mode::SilentOnWrites if matches!(request, ClientRequest::Put { .. }) => return None,
            _ => {}
        }
        let mut context = CausalContext::new();
        context.insert(Dot::new(Actor(self.actor), 1));
        if let ClientRequest::Get { options, .. } = &request {
            self.shared.read_rs.lock().unwrap().push(options.r);
            if let Some(threshold) = *self.shared.covered_from_r.lock().unwrap() {
                let covered = options.r.is_some_and(|r| r >= threshold);
                let mut context = CausalContext::new();
                for actor in (1..=8).filter(|_| covered) {
                    context.insert(Dot::new(Actor(actor), 1));
                }
                return Some(ClientResponse::Get(GetReply {
                    found: covered,
                    values: if covered { vec![b"v".to_vec()] } else { vec![] },
                    context,
                    written_at: if covered {
                        vec![shoal_proto::Time::from_micros(1_700_000_000_000_000)]
                    } else {
                        vec![]
                    },
                }));
            }
        }
        Some(match request {
            ClientRequest::Get { .. } => ClientResponse::Get(GetReply {
                found: true,
                values: vec![self.id.as_str().as_bytes().to_vec()],
                context,
                written_at: vec![shoal_proto::Time::from_micros(1_700_000_000_000_000)],
            }),
            ClientRequest::Put { .. } => ClientResponse::Put(WriteReply { context }),
            ClientRequest::Delete { .. } => ClientResponse::Delete(WriteReply { context }),
            ClientRequest::Status => {
                let info = self.shared.info.lock().unwrap().clone().unwrap();
                ClientResponse::Status(StatusReport {
                    node: self.id.clone(),
                    ring_version: info.ring.version(),
                    members: info
                        .members
                        .iter()
                        .map(|m| MemberStatus {
                            id: m.id.clone(),
                            addr: m.addr,
                            state: MemberState::Up,
                            partitions_owned: info.ring.owned_count(&m.id),
                            pending_hints: 0,
                            pending_hint_bytes: 0,
                        })
                        .collect(),
                    storage: shoal_proto::wire::StorageHealth::default(),
                })
            }
            ClientRequest::ClusterInfo => unreachable!("answered above"),
            ClientRequest::Cluster(request) => self.cluster(request),
            ClientRequest::AaeStatus | ClientRequest::Backup { .. } => ClientResponse::Error(
                shoal_proto::RequestError::Internal("not served by this fake node".into()),
            ),
            ClientRequest::Batch(_) => unreachable!("unpacked by the handler"),
            ClientRequest::GetReplica { .. }
                if self.shared.silent_copy.lock().unwrap().as_deref() == Some(self.id.as_str()) =>
            {
                return None;
            }
            ClientRequest::GetReplica { .. } => {
                let is = |which: &Mutex<Option<String>>| {
                    which.lock().unwrap().as_deref() == Some(self.id.as_str())
                };
                let (differs, concurrent) = (
                    is(&self.shared.differing_copy),
                    is(&self.shared.concurrent_copy),
                );
                // The newer copy saw the others' write and one after it.
                let dots = match (differs, concurrent) {
                    (_, true) => vec![Dot::new(Actor(2), 1)],
                    (true, false) => vec![Dot::new(Actor(1), 1), Dot::new(Actor(1), 2)],
                    (false, false) => vec![Dot::new(Actor(1), 1)],
                };
                let mut context = CausalContext::new();
                dots.into_iter().for_each(|d| context.insert(d));
                let value: &[u8] = match (differs, concurrent) {
                    (_, true) => b"concurrent copy",
                    (true, false) => b"newer copy",
                    (false, false) => b"copy",
                };
                let layout_version = self
                    .shared
                    .info
                    .lock()
                    .unwrap()
                    .as_ref()
                    .unwrap()
                    .layout_version;
                ClientResponse::Replica(ReplicaReply {
                    layout_version,
                    get: GetReply {
                        found: true,
                        values: vec![value.to_vec()],
                        context,
                        written_at: vec![shoal_proto::Time::from_micros(1_700_000_000_000_000)],
                    },
                })
            }
        })
    }
}

impl FakeNode {
    /// Cluster administration as a node with a layout answers it: status names the
    /// version; a commit on the current version makes the next one, on any other is
    /// refused naming the current one. Nothing is ever staged: a commit naming a plan
    /// commits only the plan of no changes on the current version, and refuses any other
    /// as changed.
    fn cluster(&self, request: ClusterRequest) -> ClientResponse {
        let mut info = self.shared.info.lock().unwrap();
        let info = info.as_mut().unwrap();
        let current = info.layout_version;
        match request {
            ClusterRequest::Status => {
                ClientResponse::Cluster(ClusterReply::Status(ClusterStatus {
                    node: self.id.clone(),
                    version: current,
                    settings: ClusterSettings {
                        cluster_id: "fake".into(),
                        partitions: info.ring.partition_count(),
                        n: info.n,
                    },
                    versions_in_use: vec![current],
                    members: Vec::new(),
                    transfers: TransferSummary::default(),
                    staged: Vec::new(),
                }))
            }
            ClusterRequest::Commit { version } if version == current => {
                info.layout_version += 1;
                ClientResponse::Cluster(ClusterReply::Committed {
                    version: info.layout_version,
                })
            }
            ClusterRequest::Commit { version } => {
                ClientResponse::Error(RequestError::LayoutRefused(format!(
                    "the layout is at version {current}, not {version}: plan again"
                )))
            }
            ClusterRequest::CommitPlan { version, plan } if version == current => {
                let staged = PlanId::of(current, &[]);
                if plan == staged {
                    info.layout_version += 1;
                    ClientResponse::Cluster(ClusterReply::Committed {
                        version: info.layout_version,
                    })
                } else {
                    ClientResponse::Error(RequestError::PlanChanged {
                        planned: plan,
                        staged,
                    })
                }
            }
            _ => ClientResponse::Error(RequestError::LayoutRefused("nothing is staged".into())),
        }
    }
}

struct NodeHandler(Arc<FakeNode>);

impl Handler for NodeHandler {
    async fn handle(&self, _peer: PeerRole, request: Vec<u8>) -> Vec<u8> {
        let node = &self.0;
        let version = answer_version(&request);
        let found = u16::from_be_bytes([request[0], request[1]]);
        let speaks = *node.speaks.lock().unwrap();
        if found > speaks {
            node.shared.frames.lock().unwrap().push((found, 0));
            let refusal = Response::Error(RequestError::UnsupportedVersion {
                found,
                supported: speaks,
            });
            return encode_response_as(&refusal, WireVersion::new(speaks).unwrap());
        }
        let request = match decode_request(&request) {
            Ok(Request::Client(c)) => c,
            // As a node answers a frame it cannot decode.
            Err(e) => {
                node.shared.frames.lock().unwrap().push((found, 0));
                let refusal = Response::Error(RequestError::Malformed(e.to_string()));
                return encode_response_as(&refusal, version);
            }
            other => panic!("fake node got {other:?}"),
        };
        let items = match &request {
            ClientRequest::Batch(items) => items.len(),
            _ => 1,
        };
        node.shared.frames.lock().unwrap().push((found, items));
        let gate = node.shared.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            // Each permit lets one frame through.
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
        }
        let response = match request {
            ClientRequest::Batch(items) => {
                let mut answers = Vec::new();
                for item in items {
                    // A read of "big" is too large to answer inside a batch's frame.
                    if let ClientRequest::Get { key, .. } = &item {
                        if key == b"big" {
                            answers.push(ClientResponse::Error(RequestError::ResponseTooLarge {
                                len: 1 << 20,
                                max: 1 << 16,
                            }));
                            continue;
                        }
                    }
                    match node.answer(item) {
                        Some(answer) => answers.push(answer),
                        None => std::future::pending().await,
                    }
                }
                ClientResponse::Batch(answers)
            }
            request => match node.answer(request) {
                Some(answer) => answer,
                None => std::future::pending().await,
            },
        };
        encode_response_as(&Response::Client(response), version)
    }
}

/// A cluster of fake nodes, some live and some whose address answers nothing.
struct Cluster {
    _dir: tempfile::TempDir,
    tls: TlsFiles,
    shared: Arc<Shared>,
    nodes: Vec<Arc<FakeNode>>,
    servers: Vec<Endpoint>,
    /// Every member's address, live or dead, in id order.
    addrs: Vec<SocketAddr>,
}

/// A loopback UDP port nobody listens on.
fn dead_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

impl Cluster {
    /// `live[i]` says whether member `n{i+1}` runs; dead members are in the ring with an
    /// address where nothing listens.
    async fn start(live: &[bool]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        certs::generate_ca(dir.path()).unwrap();
        certs::issue_client_cert(dir.path(), "tester", dir.path()).unwrap();
        let ca = certs::read_ca(dir.path()).unwrap();
        let shared = Arc::new(Shared::default());
        let (mut nodes, mut servers, mut addrs, mut ids) = (vec![], vec![], vec![], vec![]);
        for (i, &up) in live.iter().enumerate() {
            let id = NodeId::new(format!("n{}", i + 1)).unwrap();
            ids.push(id.clone());
            if !up {
                addrs.push(dead_addr());
                continue;
            }
            let leaf = certs::issue_node_cert_pem(&ca, &id).unwrap();
            let identity =
                TlsIdentity::from_pem(&ca.cert_pem, &leaf.cert_chain_pem, &leaf.key_pem).unwrap();
            let server = Endpoint::server(
                "127.0.0.1:0".parse().unwrap(),
                &identity,
                TransportConfig::default(),
            )
            .unwrap();
            let node = Arc::new(FakeNode {
                id,
                actor: i as u64 + 1,
                speaks: Mutex::new(WIRE_VERSION),
                mode: Mutex::new(Mode::Normal),
                shared: shared.clone(),
            });
            server.serve(Arc::new(NodeHandler(node.clone())));
            addrs.push(server.local_addr());
            nodes.push(node);
            servers.push(server);
        }
        let ring = Ring::new(64, ids.iter().cloned().map(Member::new).collect()).unwrap();
        let members = ids
            .iter()
            .zip(&addrs)
            .map(|(id, &addr)| MemberAddress {
                id: id.clone(),
                addr,
            })
            .collect();
        *shared.info.lock().unwrap() = Some(ClusterInfo {
            ring,
            members,
            n: 3,
            r: 2,
            w: 2,
            layout_version: 1,
        });
        let tls = TlsFiles {
            ca: dir.path().join(certs::CA_CERT_FILE),
            cert: dir.path().join(certs::CLIENT_CERT_FILE),
            key: dir.path().join(certs::CLIENT_KEY_FILE),
        };
        Cluster {
            _dir: dir,
            tls,
            shared,
            nodes,
            servers,
            addrs,
        }
    }

    /// A client config without direct reads: the tests of routing see each read go to
    /// one coordinator (the direct-read tests turn them on).
    fn config(&self, seeds: Vec<SocketAddr>) -> ClientConfig {
        let mut config = ClientConfig::new(seeds, self.tls.clone());
        config.connect_timeout = Duration::from_millis(500);
        config.direct_reads = false;
        config
    }

    /// A client with direct reads (the default) seeded with every member.
    async fn direct_client(&self) -> Client {
        let mut config = self.config(self.addrs.clone());
        config.direct_reads = true;
        Client::connect(config).await.unwrap()
    }

    fn node(&self, id: &str) -> &Arc<FakeNode> {
        self.nodes.iter().find(|n| n.id.as_str() == id).unwrap()
    }

    fn ring(&self) -> Ring {
        self.shared
            .info
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .ring
            .clone()
    }

    /// The log of client requests, minus cluster-info requests, then cleared.
    fn take_log(&self) -> Vec<(String, &'static str)> {
        let mut log = self.shared.log.lock().unwrap();
        let out = log
            .iter()
            .filter(|(_, op)| *op != "cluster_info")
            .cloned()
            .collect();
        log.clear();
        out
    }

    /// A key whose preference list starts with `first`.
    fn key_led_by(&self, first: &str) -> Vec<u8> {
        let ring = self.ring();
        (0..10_000)
            .map(|i| format!("key-{i}").into_bytes())
            .find(|k| ring.preference_list_for_key(k, 3).nodes[0].as_str() == first)
            .unwrap()
    }

    async fn stop(self, client: Client) {
        client.close().await;
        for server in &self.servers {
            server.close().await;
        }
    }
}

#[tokio::test]
async fn connect_skips_dead_seeds_and_learns_the_cluster() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let client = Client::connect(cluster.config(vec![dead_addr(), cluster.addrs[1]]))
        .await
        .unwrap();
    let info = client.cluster_info().await;
    assert_eq!(info.members.len(), 3);
    assert_eq!(info.n, 3);
    cluster.stop(client).await;
}

#[tokio::test]
async fn connect_with_no_live_seed_is_unreachable_listing_the_seeds() {
    let cluster = Cluster::start(&[true]).await;
    let seeds = vec![dead_addr(), dead_addr()];
    match Client::connect(cluster.config(seeds.clone())).await {
        Err(ClientError::Unreachable { tried, .. }) => assert_eq!(tried, seeds),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    for server in &cluster.servers {
        server.close().await;
    }
}

#[tokio::test]
async fn missing_tls_files_are_a_tls_error() {
    let cluster = Cluster::start(&[true]).await;
    let mut config = cluster.config(vec![cluster.addrs[0]]);
    config.tls.cert = Path::new("/nonexistent/client.pem").to_owned();
    let err = Client::connect(config).await.unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
    assert!(err.is_config());
    for server in &cluster.servers {
        server.close().await;
    }
}

#[tokio::test]
async fn writes_go_to_the_first_replica_and_reads_spread_over_the_replicas() {
    let cluster = Cluster::start(&[true, true, true, true]).await;
    let client = Client::connect(cluster.config(vec![cluster.addrs[0]]))
        .await
        .unwrap();
    cluster.take_log();
    let ring = cluster.ring();
    for i in 0..20 {
        let key = format!("k{i}");
        let pref: Vec<String> = ring
            .preference_list_for_key(key.as_bytes(), 3)
            .nodes
            .iter()
            .map(|n| n.to_string())
            .collect();
        client.put(&key, "v").await.unwrap();
        // Three reads in a row: one from each replica.
        let mut readers = Vec::new();
        let mut context = None;
        for _ in 0..3 {
            let read = client.get(&key).await.unwrap();
            readers.push(String::from_utf8(read.values[0].clone()).unwrap());
            // The node's write time comes through, as a wall-clock time, with its value.
            let written = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000);
            assert_eq!(read.written_at, vec![written]);
            assert_eq!(read.siblings()[0].written_at, Some(written));
            context = Some(read.context);
        }
        client
            .delete_with(&key)
            .context(context.as_ref())
            .send()
            .await
            .unwrap();
        readers.sort();
        let mut want = pref.clone();
        want.sort();
        assert_eq!(readers, want, "{key}");
        let log = cluster.take_log();
        assert_eq!(log[0], (pref[0].clone(), "put"));
        assert_eq!(log[4], (pref[0].clone(), "delete"));
        assert_eq!(log.len(), 5);
    }
    cluster.stop(client).await;
}

#[tokio::test]
async fn unreachable_primary_is_routed_around() {
    // n2 is in the ring but nothing listens at its address.
    let cluster = Cluster::start(&[true, false, true, true]).await;
    let client = Client::connect(cluster.config(vec![cluster.addrs[0]]))
        .await
        .unwrap();
    let key = cluster.key_led_by("n2");
    let second = cluster.ring().preference_list_for_key(&key, 3).nodes[1].to_string();
    cluster.take_log();
    for _ in 0..2 {
        let ctx = client.put(&key, "v").await.unwrap();
        assert!(!ctx.is_empty());
    }
    assert_eq!(
        cluster.take_log(),
        vec![(second.clone(), "put"), (second, "put")]
    );
    cluster.stop(client).await;
}

#[tokio::test]
async fn write_with_unknown_outcome_is_not_retried() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let client = Client::connect(cluster.config(vec![cluster.addrs[0]]))
        .await
        .unwrap();
    let key = cluster.key_led_by("n1");
    *cluster.node("n1").mode.lock().unwrap() = Mode::SilentOnWrites;
    cluster.take_log();
    let err = client
        .put_with(&key, "v")
        .timeout(Duration::from_millis(100))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Transport(ref e) if !e.is_not_delivered()),
        "{err:?}"
    );
    assert_eq!(cluster.take_log(), vec![("n1".to_owned(), "put")]);
    cluster.stop(client).await;
}

#[tokio::test]
async fn read_skips_a_node_shutting_down_but_write_reports_it() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let client = Client::connect(cluster.config(vec![cluster.addrs[0]]))
        .await
        .unwrap();
    let key = cluster.key_led_by("n1");
    let second = cluster.ring().preference_list_for_key(&key, 3).nodes[1].to_string();
    *cluster.node("n1").mode.lock().unwrap() = Mode::Fail(RequestError::ShuttingDown);
    cluster.take_log();
    let read = client.get(&key).await.unwrap();
    assert_eq!(read.values, vec![second.as_bytes().to_vec()]);
    assert_eq!(
        cluster.take_log(),
        vec![("n1".to_owned(), "get"), (second, "get")]
    );

    // n1 is now marked down for reads and writes alike; bring it back and let the mark
    // lapse by clearing it through a successful status call to n1.
    *cluster.node("n1").mode.lock().unwrap() = Mode::Normal;
    client
        .status(Some(&NodeId::new("n1").unwrap()))
        .await
        .unwrap();
    *cluster.node("n1").mode.lock().unwrap() = Mode::Fail(RequestError::ShuttingDown);
    cluster.take_log();
    let err = client.put(&key, "v").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Server(RequestError::ShuttingDown)),
        "{err:?}"
    );
    assert_eq!(cluster.take_log(), vec![("n1".to_owned(), "put")]);
    cluster.stop(client).await;
}

#[tokio::test]
async fn node_errors_come_back_typed() {
    let cluster = Cluster::start(&[true]).await;
    let client = Client::connect(cluster.config(vec![cluster.addrs[0]]))
        .await
        .unwrap();
    *cluster.node("n1").mode.lock().unwrap() = Mode::Fail(RequestError::Unavailable {
        needed: 2,
        alive: 1,
    });
    let err = client.put("k", "v").await.unwrap_err();
    assert!(matches!(
        err,
        ClientError::Unavailable {
            needed: 2,
            alive: 1
        }
    ));
    assert_eq!(
        err.to_string(),
        "unavailable: 2 replicas needed, 1 reachable"
    );
    *cluster.node("n1").mode.lock().unwrap() =
        Mode::Fail(RequestError::Timeout { acks: 1, needed: 2 });
    let err = client.get("k").await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { acks: 1, needed: 2 }));
    cluster.stop(client).await;
}

#[tokio::test]
async fn bad_keys_are_refused_before_sending() {
    let cluster = Cluster::start(&[true]).await;
    let client = Client::connect(cluster.config(vec![cluster.addrs[0]]))
        .await
        .unwrap();
    cluster.take_log();
    assert!(matches!(client.get("").await, Err(ClientError::EmptyKey)));
    assert!(matches!(
        client.put(vec![b'k'; 4097], "v").await,
        Err(ClientError::KeyTooLarge {
            len: 4097,
            max: 4096
        })
    ));
    assert!(cluster.take_log().is_empty());
    cluster.stop(client).await;
}

#[tokio::test]
async fn status_asks_the_named_node_and_refuses_unknown_ones() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let client = Client::connect(cluster.config(vec![cluster.addrs[0]]))
        .await
        .unwrap();
    let n3 = NodeId::new("n3").unwrap();
    let report = client.status(Some(&n3)).await.unwrap();
    assert_eq!(report.node, n3);
    assert_eq!(report.members.len(), 3);
    let any = client.status(None).await.unwrap();
    assert_eq!(any.members.len(), 3);
    let err = client
        .status(Some(&NodeId::new("ghost").unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::UnknownNode(ref id) if id.as_str() == "ghost"));
    cluster.stop(client).await;
}

#[tokio::test]
async fn every_node_down_is_unreachable_listing_each_once() {
    let cluster = Cluster::start(&[true, false, false]).await;
    let client = Client::connect(cluster.config(vec![cluster.addrs[0]]))
        .await
        .unwrap();
    // Take the one live node away too.
    for server in &cluster.servers {
        server.close().await;
    }
    let err = client.put("k", "v").await.unwrap_err();
    match err {
        ClientError::Unreachable { mut tried, .. } => {
            tried.sort();
            let mut all = cluster.addrs.clone();
            all.sort();
            assert_eq!(tried, all);
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    client.close().await;
}

/// A retry policy with millisecond waits and a fixed jitter seed.
fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(max_attempts)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .jitter_seed(42)
}

#[tokio::test]
async fn overloaded_reads_and_writes_are_retried_until_they_succeed() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let mut config = cluster.config(vec![cluster.addrs[0]]);
    config.retry = fast_retries(3);
    let client = Client::connect(config).await.unwrap();
    cluster.take_log();
    for _ in 0..2 {
        cluster
            .shared
            .fail_next
            .lock()
            .unwrap()
            .extend([RequestError::Overloaded, RequestError::Overloaded]);
        client.put("k", "v").await.unwrap();
        assert_eq!(cluster.take_log().len(), 3, "two refusals, then the write");
    }
    cluster.shared.fail_next.lock().unwrap().extend([
        RequestError::Overloaded,
        RequestError::Unavailable {
            needed: 2,
            alive: 1,
        },
    ]);
    client.get("k").await.unwrap();
    assert_eq!(cluster.take_log().len(), 3);
    // At most max_attempts tries: the third refusal is the answer.
    cluster
        .shared
        .fail_next
        .lock()
        .unwrap()
        .extend(std::iter::repeat_n(RequestError::Overloaded, 5));
    let err = client.get("k").await.unwrap_err();
    assert!(matches!(err, ClientError::Overloaded), "{err:?}");
    assert_eq!(cluster.take_log().len(), 3);
    cluster.shared.fail_next.lock().unwrap().clear();
    cluster.stop(client).await;
}

#[tokio::test]
async fn writes_with_an_unknown_outcome_are_retried_only_when_declared_idempotent() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let mut config = cluster.config(vec![cluster.addrs[0]]);
    config.retry = fast_retries(3);
    let client = Client::connect(config.clone()).await.unwrap();
    cluster.take_log();
    for unknown in [
        RequestError::Timeout { acks: 1, needed: 2 },
        RequestError::Incomplete { acks: 1, needed: 2 },
    ] {
        cluster
            .shared
            .fail_next
            .lock()
            .unwrap()
            .push_back(unknown.clone());
        let err = client.put("k", "v").await.unwrap_err();
        assert!(err.is_retryable() && !err.is_not_applied(), "{err:?}");
        assert_eq!(cluster.take_log().len(), 1, "{unknown:?} was sent again");
        // A read is retried.
        cluster
            .shared
            .fail_next
            .lock()
            .unwrap()
            .push_back(unknown.clone());
        client.get("k").await.unwrap();
        assert_eq!(cluster.take_log().len(), 2);
    }
    // `Unavailable` of a write means too few replicas were found before anything was
    // written (a write stored before its quorum failed answers `Incomplete`): retried.
    cluster
        .shared
        .fail_next
        .lock()
        .unwrap()
        .push_back(RequestError::Unavailable {
            needed: 2,
            alive: 1,
        });
    client.put("k", "v").await.unwrap();
    assert_eq!(
        cluster.take_log().len(),
        2,
        "Unavailable was not sent again"
    );
    client.close().await;
    config.retry = fast_retries(3).idempotent_writes(true);
    let client = Client::connect(config).await.unwrap();
    cluster.take_log();
    cluster
        .shared
        .fail_next
        .lock()
        .unwrap()
        .push_back(RequestError::Timeout { acks: 1, needed: 2 });
    client.delete("k").await.unwrap();
    assert_eq!(cluster.take_log().len(), 2);
    cluster.stop(client).await;
}

#[tokio::test]
async fn builder_takes_host_name_seeds_and_certificates_from_memory() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let read = |p: &std::path::PathBuf| std::fs::read_to_string(p).unwrap();
    let client = Client::builder()
        .seed(format!("localhost:{}", cluster.addrs[1].port()))
        .tls_pem(
            read(&cluster.tls.ca),
            read(&cluster.tls.cert),
            read(&cluster.tls.key),
        )
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.cluster_info().await.members.len(), 3);
    client.put("k", "v").await.unwrap();
    assert!(client.get("k").await.unwrap().found);
    client.close().await;

    // A malformed seed, a name that does not resolve, missing certificates: typed errors.
    let err = Client::builder()
        .seed("no port")
        .tls_files(&cluster.tls.ca, &cluster.tls.cert, &cluster.tls.key)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Config(shoal_client::ConfigError::Field { field: "seeds", .. })
        ),
        "{err:?}"
    );
    let err = Client::builder()
        .seed("shoal-seed.invalid:7000")
        .tls_files(&cluster.tls.ca, &cluster.tls.cert, &cluster.tls.key)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Unreachable { tried, last } if tried.is_empty() && last.contains("shoal-seed.invalid")),
        "{err:?}"
    );
    let err = Client::builder()
        .seed_addr(cluster.addrs[0])
        .connect()
        .await
        .unwrap_err();
    assert!(err.is_config(), "{err:?}");
    for server in &cluster.servers {
        server.close().await;
    }
}

#[tokio::test]
async fn batches_answer_every_key_in_order_from_its_replicas() {
    let cluster = Cluster::start(&[true, true, true, true]).await;
    let client = Client::connect(cluster.config(vec![cluster.addrs[0]]))
        .await
        .unwrap();
    cluster.take_log();
    let ring = cluster.ring();
    let keys: Vec<String> = (0..50).map(|i| format!("batch-{i}")).collect();
    let mut bad = keys.clone();
    bad.push(String::new());
    let reads = client.get_many(&bad).await.unwrap();
    assert_eq!(reads.len(), 51);
    for (key, read) in keys.iter().zip(&reads) {
        let pref = ring.preference_list_for_key(key.as_bytes(), 3).nodes;
        let reader = String::from_utf8(read.as_ref().unwrap().values[0].clone()).unwrap();
        assert!(pref.iter().any(|n| n.as_str() == reader), "{key}: {reader}");
    }
    assert!(matches!(reads[50], Err(ClientError::EmptyKey)));
    let writes = client
        .put_many(keys.iter().map(|k| (k.as_str(), "v")))
        .await
        .unwrap();
    assert!(writes.iter().all(Result::is_ok));
    let log = cluster.take_log();
    assert_eq!(log.iter().filter(|(_, op)| *op == "get").count(), 50);
    assert_eq!(log.iter().filter(|(_, op)| *op == "put").count(), 50);
    let too_many = vec!["k"; shoal_client::MAX_BATCH_KEYS + 1];
    assert!(matches!(
        client.get_many(&too_many).await,
        Err(ClientError::InvalidOptions(_))
    ));
    cluster.stop(client).await;
}

/// Three live fake nodes and a client of them, for the session tests.
async fn three_nodes() -> (Cluster, Client) {
    let cluster = Cluster::start(&[true, true, true]).await;
    let client = Client::connect(cluster.config(vec![cluster.addrs[0]]))
        .await
        .unwrap();
    (cluster, client)
}

#[tokio::test]
async fn a_session_read_that_misses_its_write_asks_more_replicas() {
    let (cluster, client) = three_nodes().await;
    // Reads of fewer than 3 replicas miss every write.
    *cluster.shared.covered_from_r.lock().unwrap() = Some(3);
    let session = client.session();
    session.put("k", "v").await.unwrap();
    // A plain read at the default R = 2 is stale: it does not see the write.
    assert!(!client.get("k").await.unwrap().found);
    cluster.shared.read_rs.lock().unwrap().clear();
    let read = session.get("k").await.unwrap();
    assert!(read.found, "the session read must see its write");
    assert_eq!(
        *cluster.shared.read_rs.lock().unwrap(),
        vec![Some(2), Some(3)],
        "first the cluster's R, then one more replica"
    );
    cluster.stop(client).await;
}

#[tokio::test]
async fn a_session_read_no_replica_count_covers_fails_not_covered() {
    let (cluster, client) = three_nodes().await;
    *cluster.shared.covered_from_r.lock().unwrap() = Some(4);
    let session = client.session();
    session.put("k", "v").await.unwrap();
    cluster.shared.read_rs.lock().unwrap().clear();
    match session
        .get_opts("k", shoal_client::ReadOptions::default().r(1))
        .await
    {
        Err(e @ ClientError::NotCovered { r: 3, n: 3, .. }) => assert!(e.is_retryable()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        *cluster.shared.read_rs.lock().unwrap(),
        vec![Some(1), Some(2), Some(3)]
    );
    // An R outside 1..=N is refused, not clamped into the schedule.
    for r in [0, 4] {
        assert!(matches!(
            session
                .get_opts("k", shoal_client::ReadOptions::default().r(r))
                .await,
            Err(ClientError::InvalidOptions(m)) if m.contains("1..=3")
        ));
    }
    // A key the session never touched is read as usual.
    assert!(!session.get("other").await.unwrap().found);
    // Forgetting the key drops the guarantee.
    session.forget("k");
    assert!(!session.get("k").await.unwrap().found);
    cluster.stop(client).await;
}

#[tokio::test]
async fn a_session_never_goes_back_to_older_data_than_it_read() {
    let (cluster, client) = three_nodes().await;
    let session = client.session();
    // R = 3 sees the value: the session remembers that read.
    *cluster.shared.covered_from_r.lock().unwrap() = Some(3);
    let first = session
        .get_opts("k", shoal_client::ReadOptions::default().r(3))
        .await
        .unwrap();
    assert!(first.found);
    // Now no read covers it: the session refuses the older answer.
    *cluster.shared.covered_from_r.lock().unwrap() = Some(4);
    assert!(matches!(
        session.get("k").await,
        Err(ClientError::NotCovered { .. })
    ));
    cluster.stop(client).await;
}

/// The next keyed request, whichever node it reaches, gets `e`.
fn refuse_next(cluster: &Cluster, e: RequestError) {
    cluster.shared.fail_next.lock().unwrap().push_back(e);
}

/// How many cluster-info requests the fake nodes have answered so far.
fn cluster_info_requests(cluster: &Cluster) -> usize {
    let log = cluster.shared.log.lock().unwrap();
    log.iter().filter(|(_, op)| *op == "cluster_info").count()
}

#[tokio::test]
async fn a_stale_layout_refusal_makes_the_client_fetch_the_newer_layout_before_retrying() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let mut config = cluster.config(cluster.addrs.clone());
    config.retry = fast_retries(3);
    let client = Client::connect(config).await.unwrap();
    assert_eq!(client.layout_version(), 1);
    let fetched = cluster_info_requests(&cluster);

    // The cluster moved to layout 2, and a node refuses the client's request as stale.
    cluster
        .shared
        .info
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .layout_version = 2;
    refuse_next(&cluster, RequestError::StaleLayout { current: 2 });
    client.put("k", "v").await.unwrap();
    assert_eq!(client.layout_version(), 2, "learned before the retry");
    assert_eq!(cluster_info_requests(&cluster), fetched + 1, "one fetch");

    // A refusal naming a version the client already has fetches nothing.
    refuse_next(&cluster, RequestError::StaleLayout { current: 2 });
    client.get("k").await.unwrap();
    assert_eq!(cluster_info_requests(&cluster), fetched + 1);
    cluster.stop(client).await;
}

/// `commit_plan` sends the plan it names: the node's refusal of a changed plan is the
/// typed `PlanChanged` naming the plan staged now; the plan staged now commits.
#[tokio::test]
async fn a_commit_naming_a_changed_plan_is_refused_with_the_plan_staged_now() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let client = Client::connect(cluster.config(cluster.addrs.clone()))
        .await
        .unwrap();
    let staged = PlanId::of(1, &[]);
    match client.commit_plan(1, PlanId(7)).await {
        Err(e @ ClientError::PlanChanged { .. }) => {
            assert!(
                matches!(e, ClientError::PlanChanged { planned, staged: s } if planned == PlanId(7) && s == staged)
            );
            assert!(!e.is_retryable() && e.is_not_applied());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.layout_version(), 1);
    assert_eq!(client.commit_plan(1, staged).await.unwrap(), 2);
    assert_eq!(client.layout_version(), 2);
    cluster.stop(client).await;
}

#[tokio::test]
async fn cluster_calls_return_typed_answers_and_a_commit_is_learned() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let client = Client::connect(cluster.config(cluster.addrs.clone()))
        .await
        .unwrap();
    assert_eq!(client.cluster_status().await.unwrap().version, 1);

    // A commit on the current version makes version 2, which the client then routes by.
    assert_eq!(client.commit(1).await.unwrap(), 2);
    assert_eq!(client.layout_version(), 2);

    // On an old version: refused with the node's text, naming the current version; not
    // retryable, and nothing was applied.
    match client.commit(1).await {
        Err(ClientError::LayoutRefused(m)) => {
            assert_eq!(m, "the layout is at version 2, not 1: plan again");
            let e = ClientError::LayoutRefused(m);
            assert!(!e.is_retryable() && e.is_not_applied());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client.plan().await,
        Err(ClientError::LayoutRefused(m)) if m == "nothing is staged"
    ));
    let ops: Vec<&str> = cluster.take_log().into_iter().map(|(_, op)| op).collect();
    assert_eq!(ops, ["cluster", "cluster", "cluster", "cluster"]);
    // A weight of 0 is refused before anything is sent.
    assert!(matches!(
        client
            .stage_join(&NodeId::new("n9").unwrap(), None, 0)
            .await,
        Err(ClientError::InvalidOptions(_))
    ));
    assert!(cluster.take_log().is_empty());
    cluster.stop(client).await;
}

/// A one-node fake cluster speaking `version`, and a client that keeps one frame in
/// flight to it (so that the requests beyond it wait and batch).
async fn one_node_one_frame_speaking(version: u16) -> (Cluster, Client) {
    let cluster = Cluster::start(&[true]).await;
    *cluster.nodes[0].speaks.lock().unwrap() = version;
    let mut config = cluster.config(vec![cluster.addrs[0]]);
    config.frames_per_node = 1;
    let client = Client::connect(config).await.unwrap();
    (cluster, client)
}

async fn one_node_one_frame() -> (Cluster, Client) {
    one_node_one_frame_speaking(WIRE_VERSION).await
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// With `frames_per_node` frames unanswered, further requests to that node wait in the
/// client and go together in one batch frame when a frame returns; each gets its own
/// answer.
#[tokio::test]
async fn requests_beyond_the_frames_in_flight_share_one_batch_frame() {
    let (cluster, client) = one_node_one_frame().await;
    cluster.shared.frames.lock().unwrap().clear();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *cluster.shared.gate.lock().unwrap() = Some(gate.clone());
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = client.clone();
        puts.spawn(async move { client.put(format!("k{i}"), "v").await });
    }
    // One frame is at the node, held; the other 19 wait in the client for it.
    until("19 requests waiting behind one frame", || {
        client.waiting_requests() == 19 && cluster.shared.frames.lock().unwrap().len() == 1
    })
    .await;
    gate.add_permits(1000);
    while let Some(put) = puts.join_next().await {
        put.unwrap().expect("every batched put is answered");
    }
    assert_eq!(client.waiting_requests(), 0);
    let frames = cluster.shared.frames.lock().unwrap().clone();
    assert_eq!(frames, vec![(WIRE_VERSION, 1), (WIRE_VERSION, 19)]);
    // Cluster administration and status never wait for a batch.
    assert!(client.status(None).await.is_ok());
    // Reads are batched too, and get their own answers.
    cluster.shared.frames.lock().unwrap().clear();
    let mut gets = tokio::task::JoinSet::new();
    for i in 0..5 {
        let client = client.clone();
        gets.spawn(async move { client.get(format!("k{i}")).await });
    }
    while let Some(get) = gets.join_next().await {
        assert_eq!(get.unwrap().unwrap().values, vec![b"n1".to_vec()]);
    }
    let requests: usize = cluster
        .shared
        .frames
        .lock()
        .unwrap()
        .iter()
        .map(|f| f.1)
        .sum();
    assert_eq!(requests, 5);
    cluster.stop(client).await;
}

/// A node of the previous release (wire version 5) refuses the first frame of version 6;
/// the client sends it again in version 5, and from then on sends that node every request
/// alone in version 5, never a batch.
#[tokio::test]
async fn a_node_of_the_previous_release_gets_every_request_alone_in_its_version() {
    let (cluster, client) = one_node_one_frame_speaking(WIRE_VERSION - 1).await;
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = client.clone();
        puts.spawn(async move { client.put(format!("k{i}"), "v").await });
    }
    while let Some(put) = puts.join_next().await {
        put.unwrap().expect("every put is answered");
    }
    let frames = cluster.shared.frames.lock().unwrap().clone();
    // The cluster info asked at connect: refused in 6, answered in 5; then 20 puts in 5.
    assert_eq!(frames[0], (WIRE_VERSION, 0));
    assert_eq!(frames.len(), 22, "{frames:?}");
    assert!(
        frames[1..].iter().all(|f| *f == (WIRE_VERSION - 1, 1)),
        "{frames:?}"
    );
    cluster.stop(client).await;
}

/// An answer too large for the batch's frame is asked again alone; a request whose caller
/// stopped waiting before its batch left is never sent.
#[tokio::test]
async fn a_batched_answer_too_large_is_asked_again_alone_and_abandoned_requests_are_not_sent() {
    let (cluster, client) = one_node_one_frame().await;
    cluster.shared.frames.lock().unwrap().clear();
    cluster.take_log();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *cluster.shared.gate.lock().unwrap() = Some(gate.clone());
    let first = {
        let client = client.clone();
        tokio::spawn(async move { client.put("k0", "v").await })
    };
    until("the first frame at the node", || {
        cluster.shared.frames.lock().unwrap().len() == 1
    })
    .await;
    let spawn_get = |key: &'static str| {
        let client = client.clone();
        tokio::spawn(async move { client.get(key).await })
    };
    let big = spawn_get("big");
    let small = spawn_get("k1");
    let abandoned = {
        let client = client.clone();
        tokio::spawn(async move { client.put("gone", "v").await })
    };
    until("three requests waiting", || client.waiting_requests() == 3).await;
    abandoned.abort();
    assert!(abandoned.await.unwrap_err().is_cancelled());
    gate.add_permits(1000);
    first.await.unwrap().unwrap();
    assert_eq!(big.await.unwrap().unwrap().values, vec![b"n1".to_vec()]);
    assert_eq!(small.await.unwrap().unwrap().values, vec![b"n1".to_vec()]);
    let frames = cluster.shared.frames.lock().unwrap().clone();
    assert_eq!(
        frames,
        vec![(WIRE_VERSION, 1), (WIRE_VERSION, 2), (WIRE_VERSION, 1)]
    );
    let puts = cluster
        .take_log()
        .iter()
        .filter(|(_, op)| *op == "put")
        .count();
    assert_eq!(puts, 1, "the abandoned put was sent");
    assert_eq!(client.waiting_requests(), 0);
    cluster.stop(client).await;
}

/// A node that declines a request (it ran nothing: a candidate, its copy of the key's
/// partition being dropped) sends the client on to the next node, a write too; the node
/// is not marked down, so the next request to it goes there first again. When every node
/// declines, the call fails `Unreachable`, which a write may retry.
#[tokio::test]
async fn a_declined_write_goes_to_the_next_replica() {
    let (cluster, client) = three_nodes().await;
    let key = cluster.key_led_by("n1");
    let second = cluster.ring().preference_list_for_key(&key, 3).nodes[1].to_string();
    let declined = RequestError::Declined("its copy of partition 1 is being dropped".into());
    *cluster.node("n1").mode.lock().unwrap() = Mode::Fail(declined.clone());
    cluster.take_log();
    client
        .put(&key, "v")
        .await
        .expect("the second replica takes the write");
    assert_eq!(
        cluster.take_log(),
        vec![("n1".to_owned(), "put"), (second, "put")]
    );
    *cluster.node("n1").mode.lock().unwrap() = Mode::Normal;
    client.put(&key, "v").await.unwrap();
    assert_eq!(cluster.take_log(), vec![("n1".to_owned(), "put")]);

    for node in ["n1", "n2", "n3"] {
        *cluster.node(node).mode.lock().unwrap() = Mode::Fail(declined.clone());
    }
    let err = client.put(&key, "v").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Unreachable { last, .. } if last.contains("being dropped")),
        "{err:?}"
    );
    assert!(err.is_not_applied());
    cluster.stop(client).await;
}

/// A lone request that waited goes in a frame of its own on the slot of the frame that
/// returned, so the frames in flight to a node stay within `frames_per_node`: a request
/// sent while it is out waits.
#[tokio::test]
async fn a_lone_waiting_request_keeps_the_frame_slot_it_is_sent_on() {
    let (cluster, client) = one_node_one_frame().await;
    cluster.shared.frames.lock().unwrap().clear();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *cluster.shared.gate.lock().unwrap() = Some(gate.clone());
    let put = |key: &'static str| {
        let client = client.clone();
        tokio::spawn(async move { client.put(key, "v").await })
    };
    let frames = || cluster.shared.frames.lock().unwrap().len();
    let a = put("a");
    until("a's frame at the node", || frames() == 1).await;
    let b = put("b");
    until("b waiting", || client.waiting_requests() == 1).await;
    // a is answered; b goes alone, on a's slot, and is held at the node.
    gate.add_permits(1);
    a.await.unwrap().unwrap();
    until("b's frame at the node", || frames() == 2).await;
    let c = put("c");
    until("c waiting behind b's frame", || {
        client.waiting_requests() == 1
    })
    .await;
    assert_eq!(frames(), 2, "c was sent while b's frame was out");
    gate.add_permits(1000);
    b.await.unwrap().unwrap();
    c.await.unwrap().unwrap();
    cluster.stop(client).await;
}

/// The ops each node received, without cluster-info requests, then cleared.
fn ops_by_node(cluster: &Cluster) -> Vec<(String, &'static str)> {
    let mut log = cluster.take_log();
    log.sort();
    log
}

/// Checks that the requests since the log was last taken were replica reads, one to each
/// of `nodes`, and nothing else.
fn assert_only_copies_asked(cluster: &Cluster, nodes: &[&NodeId]) {
    let mut expected: Vec<(String, &str)> = nodes
        .iter()
        .map(|n| (n.to_string(), "get_replica"))
        .collect();
    expected.sort();
    assert_eq!(ops_by_node(cluster), expected);
}

/// A read at R = 2 asks the key's first two primaries for their copies at once and,
/// both equal, answers with them: no coordinator is asked.
#[tokio::test]
async fn a_read_whose_two_copies_agree_is_answered_by_the_primaries_alone() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let client = cluster.direct_client().await;
    let key = cluster.key_led_by("n2");
    let primaries = cluster.ring().preference_list_for_key(&key, 3).nodes;
    cluster.take_log();
    let read = client.get(&key).await.unwrap();
    assert_eq!(read.values, vec![b"copy".to_vec()]);
    assert!(read.found);
    assert_only_copies_asked(&cluster, &[&primaries[0], &primaries[1]]);
    cluster.stop(client).await;
}

/// Copies one of which includes the other answer at once with that copy (what a
/// coordinator's merge of the two would answer), and the client then reads the key
/// through a coordinator in the background, whose read repair brings the older copy up
/// to date.
#[tokio::test]
async fn a_read_whose_copy_includes_the_other_is_answered_at_once_and_the_other_repaired() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let client = cluster.direct_client().await;
    let key = cluster.key_led_by("n1");
    let second = cluster.ring().preference_list_for_key(&key, 3).nodes[1].to_string();
    cluster.take_log();

    *cluster.shared.differing_copy.lock().unwrap() = Some(second);
    let read = client.get(&key).await.unwrap();
    assert_eq!(read.values, vec![b"newer copy".to_vec()]);
    // The background repair: one coordinated get after the two copies.
    let log = || cluster.shared.log.lock().unwrap().clone();
    until("the repairing read reached a coordinator", || {
        log().iter().any(|(_, op)| *op == "get")
    })
    .await;
    let log = ops_by_node(&cluster);
    let ops: Vec<&str> = log.iter().map(|(_, op)| *op).collect();
    assert_eq!(
        ops.iter().filter(|op| **op == "get_replica").count(),
        2,
        "{log:?}"
    );
    assert_eq!(ops.iter().filter(|op| **op == "get").count(), 1, "{log:?}");
    assert_eq!(log.len(), 3, "{log:?}");
    cluster.stop(client).await;
}

/// Concurrent copies, or a primary that declines, send the read through a coordinator
/// (whose read repairs); so does R = 1, which a coordinator reads in one hop anyway.
#[tokio::test]
async fn a_read_whose_copies_differ_or_are_declined_goes_through_a_coordinator() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let client = cluster.direct_client().await;
    let key = cluster.key_led_by("n1");
    let second = cluster.ring().preference_list_for_key(&key, 3).nodes[1].to_string();
    let coordinated = |log: &[(String, &str)]| log.iter().filter(|(_, op)| *op == "get").count();
    cluster.take_log();

    *cluster.shared.concurrent_copy.lock().unwrap() = Some(second);
    let read = client.get(&key).await.unwrap();
    assert_ne!(
        read.values,
        vec![b"copy".to_vec()],
        "answered by a coordinator"
    );
    let log = ops_by_node(&cluster);
    assert_eq!(coordinated(&log), 1, "{log:?}");
    assert_eq!(
        log.len(),
        3,
        "two copies asked, then one coordinator: {log:?}"
    );
    *cluster.shared.concurrent_copy.lock().unwrap() = None;

    let why = "a layout change is in progress".to_string();
    cluster
        .shared
        .fail_next
        .lock()
        .unwrap()
        .push_back(RequestError::Declined(why));
    let read = client.get(&key).await.unwrap();
    assert_ne!(
        read.values,
        vec![b"copy".to_vec()],
        "answered by a coordinator"
    );
    let log = ops_by_node(&cluster);
    assert_eq!(coordinated(&log), 1, "{log:?}");

    let read = client.get_with(&key).r(1).send().await.unwrap();
    assert!(read.found);
    let log = ops_by_node(&cluster);
    assert_eq!(log.len(), 1, "R = 1: one coordinator only: {log:?}");
    assert_eq!(log[0].1, "get");

    // Copies that agree again: answered directly again.
    client.get(&key).await.unwrap();
    let log = ops_by_node(&cluster);
    assert!(log.iter().all(|(_, op)| *op == "get_replica"), "{log:?}");
    cluster.stop(client).await;
}

/// A node of the previous release cannot read a replica read: the first read goes
/// through a coordinator after its refusal, and later reads skip the direct attempt.
#[tokio::test]
async fn reads_from_nodes_of_the_previous_release_go_through_a_coordinator() {
    let cluster = Cluster::start(&[true, true, true]).await;
    for node in &cluster.nodes {
        *node.speaks.lock().unwrap() = WIRE_VERSION - 1;
    }
    let client = cluster.direct_client().await;
    let key = cluster.key_led_by("n3");
    cluster.take_log();
    let read = client.get(&key).await.unwrap();
    assert!(read.found);
    let log = ops_by_node(&cluster);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].1, "get");
    cluster.shared.frames.lock().unwrap().clear();
    let read = client.get(&key).await.unwrap();
    assert!(read.found);
    let frames = cluster.shared.frames.lock().unwrap().clone();
    assert_eq!(
        frames,
        vec![(WIRE_VERSION - 1, 1)],
        "the second read sends one frame, the coordinated get, in the node's version"
    );
    cluster.stop(client).await;
}

/// A primary that does not answer its copy within `DIRECT_READ_WAIT` sends the read
/// through a coordinator, and is routed around for a moment: the next read asks the
/// key's other primaries instead of waiting for it again.
#[tokio::test]
async fn a_primary_that_does_not_answer_its_copy_is_routed_around() {
    let cluster = Cluster::start(&[true, true, true]).await;
    let client = cluster.direct_client().await;
    let key = cluster.key_led_by("n2");
    let primaries = cluster.ring().preference_list_for_key(&key, 3).nodes;
    *cluster.shared.silent_copy.lock().unwrap() = Some(primaries[1].to_string());
    cluster.take_log();
    let start = tokio::time::Instant::now();
    let read = client.get(&key).await.unwrap();
    assert!(start.elapsed() >= shoal_client::DIRECT_READ_WAIT);
    assert_ne!(
        read.values,
        vec![b"copy".to_vec()],
        "answered by a coordinator"
    );
    let log = ops_by_node(&cluster);
    assert_eq!(
        log.iter().filter(|(_, op)| *op == "get").count(),
        1,
        "{log:?}"
    );
    // The silent primary is marked down: the next read asks the other two primaries
    // for their copies, and they answer it.
    let read = client.get(&key).await.unwrap();
    assert_eq!(read.values, vec![b"copy".to_vec()]);
    assert_only_copies_asked(&cluster, &[&primaries[0], &primaries[2]]);
    cluster.stop(client).await;
}
