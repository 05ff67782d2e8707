//! The master's gRPC services over real sockets (127.0.0.1:0), backed by a real MetaStore.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use gfs_master::{
    ChunkConfig, ChunkManager, ControlService, MasterService, MetaConfig, MetaStore, Registry,
};
use gfs_proto::v1::master_client::MasterClient;
use gfs_proto::v1::master_control_client::MasterControlClient;
use gfs_proto::v1::master_control_server::MasterControlServer;
use gfs_proto::v1::master_server::MasterServer;
use gfs_proto::v1::{
    ChunkInfo, CreateFileRequest, DeleteRequest, HeartbeatRequest, ListRequest, MkdirRequest,
    RegisterRequest, RenameRequest, StatRequest,
};
use tonic::Code;
use tonic::transport::Channel;

struct Running {
    addr: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    registry: Arc<parking_lot::Mutex<Registry>>,
    /// Weak: a stopped server must release its directory's lock.
    meta: std::sync::Weak<MetaStore>,
}

async fn start(dir: &std::path::Path) -> Running {
    let meta = Arc::new(MetaStore::open(dir, MetaConfig::default()).unwrap());
    let registry = Arc::new(parking_lot::Mutex::new(Registry::new(Duration::from_secs(
        30,
    ))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let chunks = Arc::new(ChunkManager::new(
        Arc::clone(&meta),
        Arc::clone(&registry),
        ChunkConfig {
            chunk_size: 1 << 20,
            replication: 3,
            quorum: 2,
            lease: Duration::from_secs(60),
            rpc_timeout: Duration::from_secs(2),
            orphan_grace: Duration::from_secs(600),
            max_clones: 8,
            clone_timeout: Duration::from_secs(60),
            rebalance_threshold: 0.0,
            clock: gfs_util::time::Clock::system(),
            insecure: true,
        },
        Arc::new(gfs_master::TonicControl::new(
            Duration::from_secs(2),
            Duration::from_secs(60),
        )),
    ));
    let locks = Arc::new(gfs_master::locks::PathLocks::new());
    let trash = Arc::new(gfs_master::trash::Trash::new(
        Arc::clone(&meta),
        Arc::clone(&locks),
        Duration::from_secs(3600),
    ));
    let tokens = Arc::new(
        gfs_master::tokens::TokenIssuer::open(
            &gfs_util::disk::OsDisk,
            dir,
            Duration::from_secs(3600),
            gfs_util::time::Clock::system(),
        )
        .unwrap(),
    );
    let svc = MasterServer::new(MasterService::new(
        Arc::clone(&meta),
        Arc::clone(&chunks),
        3,
        locks,
        trash,
        Arc::clone(&tokens),
    ));
    let ctl = MasterControlServer::new(ControlService::new(
        Arc::clone(&registry),
        chunks,
        Duration::from_secs(3),
        tokens,
    ));
    let meta_handle = Arc::downgrade(&meta);
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .add_service(ctl)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        drop(meta);
    });
    Running {
        addr,
        stop,
        task,
        registry,
        meta: meta_handle,
    }
}

async fn client(addr: &str) -> MasterClient<Channel> {
    MasterClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    r.unwrap_err().code()
}

#[tokio::test]
async fn the_namespace_over_grpc_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path()).await;
    let mut c = client(&m.addr).await;
    let mkdir = |path: &str, parents| MkdirRequest {
        path: path.into(),
        parents,
    };
    let create = |path: &str| CreateFileRequest {
        path: path.into(),
        replication: 0,
        first_chunk: false,
    };
    c.mkdir(mkdir("/a/b/c", true)).await.unwrap();
    c.mkdir(mkdir("/a/b", true)).await.unwrap(); // -p: existing is fine
    assert_eq!(
        code(c.mkdir(mkdir("/a/b", false)).await),
        Code::AlreadyExists
    );
    assert_eq!(code(c.mkdir(mkdir("/x/y", false)).await), Code::NotFound);
    c.create(create("/a/b/c/f")).await.unwrap();
    assert_eq!(
        code(c.create(create("/a/b/c/f")).await),
        Code::AlreadyExists
    );
    assert_eq!(
        code(c.mkdir(mkdir("/a/b/c/f/g", true)).await),
        Code::FailedPrecondition
    );
    let bad = c.create(create("/a//b")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("empty component"),
        "{}",
        bad.message()
    );

    let st = c
        .stat(StatRequest {
            path: "/a/b/c/f".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stat
        .unwrap();
    assert!(!st.dir);
    assert_eq!(st.replication, 3);
    c.rename(RenameRequest {
        src: "/a/b/c/f".into(),
        dst: "/a/g".into(),
    })
    .await
    .unwrap();
    let names =
        |l: gfs_proto::v1::ListReply| l.entries.into_iter().map(|e| e.path).collect::<Vec<_>>();
    let l = c
        .list(ListRequest { path: "/a".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(l), ["/a/b", "/a/g"]);
    let shallow = DeleteRequest {
        path: "/a".into(),
        recursive: false,
    };
    assert_eq!(code(c.delete(shallow).await), Code::FailedPrecondition);
    c.delete(DeleteRequest {
        path: "/a/b".into(),
        recursive: true,
    })
    .await
    .unwrap();

    // Stop the master and start it again on the same directory.
    m.stop.send(()).unwrap();
    m.task.await.unwrap();
    let m = start(dir.path()).await;
    let mut c = client(&m.addr).await;
    let l = c
        .list(ListRequest { path: "/a".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(l), ["/a/g"]);
}

#[tokio::test]
async fn chunkservers_register_and_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path()).await;
    let mut c = MasterControlClient::connect(format!("http://{}", m.addr))
        .await
        .unwrap();
    let hb = |id: &str| HeartbeatRequest {
        id: id.into(),
        used_bytes: 10,
        chunks: vec![ChunkInfo {
            handle: 5,
            version: 2,
            committed_length: 100,
            sealed: false,
            unvouched: false,
        }],
        lagging: vec![],
        writing: vec![],
        disk_lost: false,
        ..HeartbeatRequest::default()
    };
    assert!(
        c.heartbeat(hb("cs1"))
            .await
            .unwrap()
            .into_inner()
            .reregister
    );
    let reply = c
        .register(RegisterRequest {
            id: "cs1".into(),
            data_addr: "127.0.0.1:8080".into(),
            repl_addr: "127.0.0.1:8081".into(),
            rack: "r1".into(),
            capacity_bytes: 1 << 30,
            used_bytes: 0,
            ..RegisterRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.heartbeat_interval_ms, 3000);
    assert!(
        !c.heartbeat(hb("cs1"))
            .await
            .unwrap()
            .into_inner()
            .reregister
    );
    let locations = m.registry.lock().locations(5, 2);
    assert_eq!(locations.len(), 1);
    assert_eq!(locations[0].0.rack, "r1");
    assert_eq!(locations[0].1.length, 100);
    let bad = c.register(RegisterRequest::default()).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

/// Finding 10 (the master's part) and I5: an unregistered sender's heartbeat is not believed
/// (a forged report of version u64::MAX used to make every real replica stale, and the next
/// bump overflow), and a registered server's version more than one step ahead of the log is
/// ignored; one step ahead is adopted only when a quorum reports it (a crash between a bump and
/// its log record), not from one replica (a fence cut short may have reached only a short one).
#[tokio::test]
async fn forged_or_impossible_chunk_reports_are_not_adopted() {
    use gfs_master::record::{AddChunkOp, CreateOp, Op};
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path()).await;
    let meta = m.meta.upgrade().unwrap();
    meta.mutate(Op::Create(CreateOp {
        path: "/f".into(),
        mtime_ms: 0,
        replication: 3,
    }))
    .await
    .unwrap();
    meta.mutate(Op::AddChunk(AddChunkOp {
        path: "/f".into(),
        handle: 9,
        version: 3,
        primary: String::new(),
        uncreated: Vec::new(),
        placed: 0,
    }))
    .await
    .unwrap();
    let mut c = MasterControlClient::connect(format!("http://{}", m.addr))
        .await
        .unwrap();
    let hb = |id: &str, version: u64, sealed: bool| HeartbeatRequest {
        id: id.into(),
        used_bytes: 10,
        chunks: vec![ChunkInfo {
            handle: 9,
            version,
            committed_length: 5,
            sealed,
            unvouched: false,
        }],
        lagging: vec![],
        writing: vec![],
        disk_lost: false,
        ..HeartbeatRequest::default()
    };
    let chunk = |_: &Running| {
        let meta = Arc::clone(&meta);
        async move { meta.read(|ns| ns.chunk(9)).await.unwrap().unwrap() }
    };
    let r = c.heartbeat(hb("evil", u64::MAX, true)).await.unwrap();
    assert!(r.into_inner().reregister);
    let now = chunk(&m).await;
    assert_eq!((now.version, now.sealed_length), (3, None));

    for (id, port) in [("cs1", 8080), ("cs2", 8090)] {
        c.register(RegisterRequest {
            id: id.into(),
            data_addr: format!("127.0.0.1:{port}"),
            repl_addr: format!("127.0.0.1:{}", port + 1),
            rack: String::new(),
            capacity_bytes: 1 << 30,
            used_bytes: 0,
            ..RegisterRequest::default()
        })
        .await
        .unwrap();
    }
    c.heartbeat(hb("cs1", 1000, false)).await.unwrap();
    assert_eq!(
        chunk(&m).await.version,
        3,
        "a jump of 997 versions was adopted"
    );
    // One version ahead on one replica: a bump that may have reached only that one (a fence
    // cut short), so it says nothing of the data and is not adopted.
    c.heartbeat(hb("cs1", 4, false)).await.unwrap();
    assert_eq!(
        chunk(&m).await.version,
        3,
        "a bump reported by one replica of a quorum of 2 was adopted"
    );
    // On a quorum (a crash between a bump and its log record): adopted.
    c.heartbeat(hb("cs2", 4, false)).await.unwrap();
    assert_eq!(chunk(&m).await.version, 4);
}

/// Issue 12, part 3 (I5): a master within one lease period of its start hands out a lease a
/// registering server reports when the log names that server as the chunk's last primary at
/// that version (adopted as it is, and extended by heartbeats); a chunk whose last primary
/// reported no lease on it is decided on at once (here: too few live replicas); a chunk whose
/// last primary did not report (an older server) or is unknown waits; a reported lease the
/// log does not name is waited out.
#[tokio::test]
async fn after_a_restart_reported_leases_are_adopted_and_silent_primaries_waited_for() {
    use gfs_master::record::{AddChunkOp, CreateOp, Op};
    use gfs_proto::v1::{AppendChunkRequest, HeldLease};

    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path()).await;
    let meta = m.meta.upgrade().unwrap();
    // File /f<h> holds chunk h, logged with its primary.
    for (h, primary) in [(1, "cs1"), (2, "cs1"), (3, "cs2"), (4, "cs2"), (5, "")] {
        let path = format!("/f{h}");
        meta.mutate(Op::Create(CreateOp {
            path: path.clone(),
            mtime_ms: 0,
            replication: 3,
        }))
        .await
        .unwrap();
        meta.mutate(Op::AddChunk(AddChunkOp {
            path,
            handle: h,
            version: 1,
            primary: primary.into(),
            uncreated: Vec::new(),
            placed: 0,
        }))
        .await
        .unwrap();
    }
    drop(meta);
    let mut c = MasterControlClient::connect(format!("http://{}", m.addr))
        .await
        .unwrap();
    let expires = (std::time::SystemTime::now() + Duration::from_secs(30))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let held = |handle: u64| HeldLease {
        handle,
        version: 1,
        expires_unix_ms: expires,
        secondaries: vec!["127.0.0.1:9021".into()],
    };
    let server = |n: u32| RegisterRequest {
        id: format!("cs{n}"),
        data_addr: format!("127.0.0.1:90{n}0"),
        repl_addr: format!("127.0.0.1:90{n}1"),
        capacity_bytes: 1 << 30,
        ..RegisterRequest::default()
    };
    // cs1 holds the lease on chunk 1 (logged to it) and one on chunk 3 (logged to cs2).
    c.register(RegisterRequest {
        leases: vec![held(1), held(3)],
        reports_leases: true,
        ..server(1)
    })
    .await
    .unwrap();
    let mc = client(&m.addr).await;
    let ask = |h: u64| {
        let req = AppendChunkRequest {
            path: format!("/f{h}"),
        };
        let mut mc = mc.clone();
        async move { mc.append_chunk(req).await }
    };
    // Its secondary has not registered yet: not listed, still counted (seed 228949108538562
    // of the simulator: a client resolving an op on this lease took the primary's word alone
    // for a majority).
    let early = ask(1).await.unwrap().into_inner();
    assert_eq!(
        (early.version, early.secondaries.len(), early.members),
        (1, 0, 2)
    );
    // cs2 is an older server: it says nothing of its leases.
    c.register(server(2)).await.unwrap();
    let adopted = ask(1).await.unwrap().into_inner();
    assert_eq!(adopted.members, 2);
    assert_eq!((adopted.handle, adopted.version), (1, 1));
    assert_eq!(adopted.primary.unwrap().id, "cs1");
    assert_eq!(adopted.lease_expires_unix_ms, expires);
    // Its secondary registered after cs1 did: named once known.
    let ids: Vec<String> = adopted.secondaries.into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["cs2"]);
    let waits = |s: tonic::Status, what: &str| {
        assert_eq!(s.code(), Code::Unavailable, "{what}: {s}");
        assert!(s.message().contains("restarted"), "{what}: {s}");
    };
    // cs1 reported no lease on chunk 2: decided on now (it has no live replica to lease).
    let s = ask(2).await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable);
    assert!(s.message().contains("replicas needed are alive"), "{s}");
    // cs1's lease on chunk 3 is not the logged one: waited out like any lease in force.
    let s = ask(3).await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable);
    assert!(s.message().contains("lease runs for another"), "{s}");
    waits(ask(4).await.unwrap_err(), "a primary that did not report");
    waits(ask(5).await.unwrap_err(), "an unknown primary");
    // The adopted lease is extended while cs1 writes to it; the other is not.
    let hb = c
        .heartbeat(HeartbeatRequest {
            id: "cs1".into(),
            writing: vec![1, 3],
            ..HeartbeatRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let extended: Vec<u64> = hb.extensions.iter().map(|x| x.handle).collect();
    assert_eq!(extended, [1]);
    drop(mc);
    let _ = m.stop.send(());
    m.task.await.unwrap();
}

/// Issue 13, item 4: `Register` replies with the master's chunk size and quorum; a server that
/// says it runs with others is not registered; one that says nothing (0, an older server) or
/// the same values is.
#[tokio::test]
async fn register_tells_the_cluster_values_and_refuses_a_server_configured_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path()).await;
    let mut c = MasterControlClient::connect(format!("http://{}", m.addr))
        .await
        .unwrap();
    let server = |id: &str, chunk_size: u64, quorum: u32| RegisterRequest {
        id: id.into(),
        data_addr: format!("127.0.0.1:1{}", id.len()),
        repl_addr: format!("127.0.0.1:2{}", id.len()),
        chunk_size,
        quorum,
        ..RegisterRequest::default()
    };
    for (id, size, quorum, registered) in [
        ("big", 64 << 20, 2, false),
        ("three", 1 << 20, 3, false),
        ("same", 1 << 20, 2, true),
        ("older", 0, 0, true),
    ] {
        let r = c
            .register(server(id, size, quorum))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((r.chunk_size, r.quorum), (1 << 20, 2), "{id}");
        assert_eq!(r.heartbeat_interval_ms, 3000, "{id}");
        let reg = m.registry.lock();
        assert_eq!(reg.is_registered(id), registered, "{id}");
        assert_eq!(reg.is_alive(id), registered, "{id}");
    }
}

/// Seed 11098 of the simulator: a sealed chunk back at four current replicas (a server
/// returned after its copy was made) loses exactly one. The heartbeat that tells the extra
/// holder to drop its replica must not list that replica again (its own report still names it,
/// and the registry took the report after the delete was decided), or the next holder to
/// heartbeat, now the fullest, sees four and drops a second, and so on down to one.
#[tokio::test]
async fn a_chunk_with_one_replica_too_many_loses_exactly_one() {
    use gfs_master::record::{AddChunkOp, CreateOp, Op, SealOp};
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path()).await;
    let meta = m.meta.upgrade().unwrap();
    for op in [
        Op::Create(CreateOp {
            path: "/f".into(),
            mtime_ms: 0,
            replication: 3,
        }),
        Op::AddChunk(AddChunkOp {
            path: "/f".into(),
            handle: 9,
            version: 3,
            primary: String::new(),
            uncreated: Vec::new(),
            placed: 0,
        }),
        Op::Seal(SealOp {
            handle: 9,
            length: 5,
        }),
    ] {
        meta.mutate(op).await.unwrap();
    }
    let mut c = MasterControlClient::connect(format!("http://{}", m.addr))
        .await
        .unwrap();
    let ids = ["cs1", "cs2", "cs3", "cs4"];
    for (i, id) in ids.iter().enumerate() {
        c.register(RegisterRequest {
            id: (*id).into(),
            data_addr: format!("127.0.0.1:{}", 8080 + 10 * i),
            repl_addr: format!("127.0.0.1:{}", 8081 + 10 * i),
            rack: String::new(),
            capacity_bytes: 1 << 30,
            used_bytes: 0,
            ..RegisterRequest::default()
        })
        .await
        .unwrap();
    }
    let mut deletes = Vec::new();
    let mut beat = async |id: &str, used_bytes: u64| {
        let reply = c
            .heartbeat(HeartbeatRequest {
                id: id.into(),
                used_bytes,
                chunks: vec![ChunkInfo {
                    handle: 9,
                    version: 3,
                    committed_length: 5,
                    sealed: true,
                    unvouched: false,
                }],
                ..HeartbeatRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        if reply.delete.iter().any(|d| d.handle == 9) {
            deletes.push(id.to_string());
        }
    };
    // All four report it, cs4 the fullest: the fourth to report makes one too many.
    for (i, id) in ids.iter().enumerate() {
        beat(id, 1000 * (i as u64 + 1)).await;
    }
    // cs4 is told to drop it; then cs3 fills up and reports again, twice (its share counts
    // from the heartbeat after it is reported).
    beat("cs4", 4000).await;
    beat("cs3", 9000).await;
    beat("cs3", 9000).await;
    beat("cs2", 2000).await;
    beat("cs1", 1000).await;
    assert_eq!(deletes, vec!["cs4"], "one replica too many, one to drop");
}
