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
        },
    ));
    let locks = Arc::new(gfs_master::locks::PathLocks::new());
    let trash = Arc::new(gfs_master::trash::Trash::new(
        Arc::clone(&meta),
        Arc::clone(&chunks),
        Arc::clone(&locks),
        Duration::from_secs(3600),
    ));
    let svc = MasterServer::new(MasterService::new(
        Arc::clone(&meta),
        Arc::clone(&chunks),
        3,
        locks,
        trash,
    ));
    let ctl = MasterControlServer::new(ControlService::new(
        Arc::clone(&registry),
        chunks,
        Duration::from_secs(3),
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
/// ignored; one step ahead (a crash between a bump and its log record) is adopted.
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
        }],
        lagging: vec![],
        writing: vec![],
        disk_lost: false,
    };
    let chunk = |_: &Running| {
        let meta = Arc::clone(&meta);
        async move { meta.read(|ns| ns.chunk(9)).await.unwrap().unwrap() }
    };
    let r = c.heartbeat(hb("evil", u64::MAX, true)).await.unwrap();
    assert!(r.into_inner().reregister);
    let now = chunk(&m).await;
    assert_eq!((now.version, now.sealed_length), (3, None));

    c.register(RegisterRequest {
        id: "cs1".into(),
        data_addr: "127.0.0.1:8080".into(),
        repl_addr: "127.0.0.1:8081".into(),
        rack: String::new(),
        capacity_bytes: 1 << 30,
        used_bytes: 0,
    })
    .await
    .unwrap();
    c.heartbeat(hb("cs1", 1000, false)).await.unwrap();
    assert_eq!(
        chunk(&m).await.version,
        3,
        "a jump of 997 versions was adopted"
    );
    c.heartbeat(hb("cs1", 4, false)).await.unwrap();
    assert_eq!(chunk(&m).await.version, 4);
}
