//! Mutual TLS between roles, end to end: a master and three chunkservers serving over TLS with
//! certificates from one CA, a client that works through them, and every gRPC call of every
//! service made without a certificate, with one from another CA, and with each role that may
//! not make it: each refused with a clear error, while the cluster keeps serving.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gfs_chunkserver::{ChunkServer, ChunkserverConfig};
use gfs_client::{Client, ClientConfig};
use gfs_host::Net;
use gfs_host::tls::{Authority, Role, Tls, TlsFiles, TlsSettings, allowed};
use gfs_master::{Master, MasterConfig};
use gfs_proto::v1::admin_client::AdminClient;
use gfs_proto::v1::chunk_control_client::ChunkControlClient;
use gfs_proto::v1::master_client::MasterClient;
use gfs_proto::v1::master_control_client::MasterControlClient;
use gfs_proto::v1::replication_client::ReplicationClient;
use gfs_proto::v1::*;
use tonic::transport::Channel;
use tonic::{Code, Status};

const HOSTS: [&str; 2] = ["127.0.0.1", "localhost"];

/// Issues the cluster's certificates (and a rogue CA's client certificate) under `dir`.
fn issue(dir: &Path) {
    let hosts: Vec<String> = HOSTS.iter().map(|h| h.to_string()).collect();
    let ca = Authority::generate("gfs test CA").unwrap();
    ca.save(dir).unwrap();
    let roles = [
        ("master", Role::Master, "master"),
        ("cs0", Role::Chunkserver, "cs0"),
        ("cs1", Role::Chunkserver, "cs1"),
        ("cs2", Role::Chunkserver, "cs2"),
        ("cs9", Role::Chunkserver, "cs9"),
        ("client", Role::Client, "alice"),
        ("admin", Role::Admin, "ops"),
    ];
    for (file, role, name) in roles {
        ca.issue_into(dir, file, role, name, &hosts).unwrap();
    }
    let rogue = Authority::generate("rogue CA").unwrap();
    rogue
        .issue_into(&dir.join("rogue"), "admin", Role::Admin, "mallory", &hosts)
        .unwrap();
}

fn tls(dir: &Path, file: &str) -> Arc<Tls> {
    Arc::new(Tls::load(&TlsFiles::in_dir(dir, file)).unwrap())
}

/// A channel to `addr` as `who` (a certificate file in `certs`), or without TLS.
async fn channel(addr: &str, certs: &Path, who: Option<&str>) -> Result<Channel, String> {
    let net = match who {
        Some(file) => Net::os().with_tls(tls(certs, file)),
        None => Net::os(),
    };
    let endpoint = net
        .endpoint(addr)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    net.connect_channel(&endpoint)
        .await
        .map_err(|e| format!("{e:?}"))
}

/// The master's configuration of these tests: over TLS with `certs`, listening on `listen`.
fn master_config(dir: &Path, certs: &Path, listen: &str) -> MasterConfig {
    MasterConfig {
        listen: listen.into(),
        http_listen: String::new(),
        data_dir: dir.join("master"),
        chunk_size: gfs_util::Size::mib(1),
        heartbeat_interval: Duration::from_millis(300),
        dead_after: Duration::from_secs(5),
        tls: TlsSettings::in_dir(certs, "master"),
        ..MasterConfig::default()
    }
}

/// Chunkservers cs0..cs2 over TLS, registering with the master at `maddr`.
async fn tls_servers(dir: &Path, certs: &Path, maddr: &str) -> Vec<ChunkServer> {
    tls_servers_with(dir, certs, maddr, |_| false).await
}

/// [`tls_servers`], with `[tls] data_plane` as `data_plane` says for each server's index.
async fn tls_servers_with(
    dir: &Path,
    certs: &Path,
    maddr: &str,
    data_plane: impl Fn(usize) -> bool,
) -> Vec<ChunkServer> {
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(
            ChunkServer::start(ChunkserverConfig {
                id: format!("cs{i}"),
                host: "127.0.0.1".into(),
                data_dir: dir.join(format!("cs{i}")),
                data_port: 0,
                repl_port: 0,
                http_port: 0,
                chunk_size: gfs_util::Size::mib(1),
                master: maddr.into(),
                tls: TlsSettings {
                    data_plane: data_plane(i),
                    ..TlsSettings::in_dir(certs, &format!("cs{i}"))
                },
                ..ChunkserverConfig::default()
            })
            .await
            .unwrap(),
        );
    }
    servers
}

/// A client of the master at `maddr` holding the certificate `file` of `certs`.
async fn tls_client(maddr: &str, certs: &Path, file: &str, cfg: ClientConfig) -> Client {
    Client::connect_with(
        maddr,
        ClientConfig {
            net: Net::os().with_tls(tls(certs, file)),
            ..cfg
        },
    )
    .await
    .unwrap()
}

/// Every call of the master's three services, with empty requests: `(path, outcome)`.
async fn master_calls(ch: Channel) -> Vec<(&'static str, Result<(), Status>)> {
    let mut m = MasterClient::new(ch.clone());
    let mut c = MasterControlClient::new(ch.clone());
    let mut a = AdminClient::new(ch);
    vec![
        (
            "/gfs.v1.Master/Mkdir",
            m.mkdir(MkdirRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.Master/Create",
            m.create(CreateFileRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.Master/Delete",
            m.delete(DeleteRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.Master/Rename",
            m.rename(RenameRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.Master/List",
            m.list(ListRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.Master/Stat",
            m.stat(StatRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.Master/AppendChunk",
            m.append_chunk(AppendChunkRequest::default())
                .await
                .map(drop),
        ),
        (
            "/gfs.v1.Master/GetChunks",
            m.get_chunks(GetChunksRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.Master/ReportSealed",
            m.report_sealed(ReportSealedRequest::default())
                .await
                .map(drop),
        ),
        (
            "/gfs.v1.MasterControl/Register",
            c.register(RegisterRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.MasterControl/Heartbeat",
            c.heartbeat(HeartbeatRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.MasterControl/ReportCorrupt",
            c.report_corrupt(ReportCorruptRequest::default())
                .await
                .map(drop),
        ),
        (
            "/gfs.v1.Admin/Report",
            a.report(ReportRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.Admin/Fsck",
            a.fsck(FsckRequest { path: "/".into() }).await.map(drop),
        ),
        (
            "/gfs.v1.Admin/Decommission",
            a.decommission(DecommissionRequest {
                id: "nobody".into(),
                cancel: true,
            })
            .await
            .map(drop),
        ),
    ]
}

/// Every call of a chunkserver's two services, with empty requests: `(path, outcome)`.
async fn chunkserver_calls(ch: Channel) -> Vec<(&'static str, Result<(), Status>)> {
    let mut c = ChunkControlClient::new(ch.clone());
    let mut r = ReplicationClient::new(ch);
    vec![
        (
            "/gfs.v1.ChunkControl/CreateChunk",
            c.create_chunk(CreateChunkRequest::default())
                .await
                .map(drop),
        ),
        (
            "/gfs.v1.ChunkControl/GrantLease",
            c.grant_lease(GrantLeaseRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.ChunkControl/SetVersion",
            c.set_version(SetVersionRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.ChunkControl/DeleteChunk",
            c.delete_chunk(DeleteChunkRequest::default())
                .await
                .map(drop),
        ),
        (
            "/gfs.v1.ChunkControl/ReportChunks",
            c.report_chunks(ReportChunksRequest::default())
                .await
                .map(drop),
        ),
        (
            "/gfs.v1.ChunkControl/CloneChunk",
            c.clone_chunk(CloneChunkRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.Replication/Replicate",
            r.replicate(futures::stream::empty::<ReplicateRequest>())
                .await
                .map(drop),
        ),
        (
            "/gfs.v1.Replication/ReadChunk",
            r.read_chunk(ReadChunkRequest::default()).await.map(drop),
        ),
        (
            "/gfs.v1.Replication/Seal",
            r.seal(SealRequest::default()).await.map(drop),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grpc_call_is_refused_to_callers_without_a_certificate_of_a_role_allowed_to_make_it()
{
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    issue(&certs);
    let master = Master::start(master_config(dir.path(), &certs, "127.0.0.1:0"))
        .await
        .unwrap();
    let maddr = master.addr.to_string();
    let servers = tls_servers(dir.path(), &certs, &maddr).await;
    let client = tls_client(&maddr, &certs, "client", ClientConfig::default()).await;
    // The cluster works over TLS: chunkservers registered, a file is written and read back.
    let admin = tls_client(&maddr, &certs, "admin", ClientConfig::default()).await;
    gfs_testkit::fixture::registered(&admin, 3).await;
    client.create("/f").await.unwrap();
    let off = client.append("/f", &b"over tls"[..]).await.unwrap();
    assert_eq!(&client.read("/f", off, 8).await.unwrap()[..], b"over tls");

    let cs = servers[0].repl_addr.to_string();
    // Without a certificate, or with another CA's, no connection is made at all.
    for who in [None, Some("rogue/admin")] {
        for addr in [&maddr, &cs] {
            let got = match channel(addr, &certs, who).await {
                Err(e) => Err(e),
                Ok(ch) => MasterClient::new(ch)
                    .stat(StatRequest { path: "/".into() })
                    .await
                    .map(drop)
                    .map_err(|s| s.to_string()),
            };
            assert!(got.is_err(), "{who:?} reached {addr}");
        }
    }
    // With a certificate of the cluster's CA, each call is refused to every role not
    // allowed to make it, before the call reaches its service.
    let roles = [
        ("client", Role::Client),
        ("admin", Role::Admin),
        ("cs9", Role::Chunkserver),
        ("master", Role::Master),
    ];
    let mut refused = 0;
    for (file, role) in roles {
        let calls = master_calls(channel(&maddr, &certs, Some(file)).await.unwrap()).await;
        let more = chunkserver_calls(channel(&cs, &certs, Some(file)).await.unwrap()).await;
        assert_eq!(calls.len() + more.len(), 24, "every call of every service");
        for (path, got) in calls.into_iter().chain(more) {
            if allowed(path).contains(&role) {
                // It reaches its service (which may refuse an empty request).
                if let Err(s) = got {
                    assert!(!s.message().contains("may not call"), "{role} {path}: {s}");
                }
            } else {
                let s = got.expect_err(path);
                assert_eq!(s.code(), Code::PermissionDenied, "{role} {path}: {s}");
                assert!(s.message().contains("may not call"), "{role} {path}: {s}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 61, "every call each role may not make");
    // A chunkserver acts only in its own name: cs9 may not register or report as cs1.
    let mut c = MasterControlClient::new(channel(&maddr, &certs, Some("cs9")).await.unwrap());
    let as_cs1 = RegisterRequest {
        id: "cs1".into(),
        data_addr: "127.0.0.1:1".into(),
        repl_addr: "127.0.0.1:2".into(),
        ..RegisterRequest::default()
    };
    let s = c.register(as_cs1).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s}");
    let s = c
        .heartbeat(HeartbeatRequest {
            id: "cs1".into(),
            ..HeartbeatRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s}");
    // Nor end a chunk it neither leads nor holds.
    let handle = client.refresh("/f").await.unwrap().chunks[0].handle;
    let s = MasterClient::new(channel(&maddr, &certs, Some("cs9")).await.unwrap())
        .report_sealed(ReportSealedRequest {
            handle,
            length: 0,
            replicas: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s}");
    assert!(s.message().contains("neither leads nor holds"), "{s}");
    // And the cluster still serves, the chunk unsealed and whole.
    let off2 = client.append("/f", &b"still"[..]).await.unwrap();
    assert_eq!(&client.read("/f", off2, 5).await.unwrap()[..], b"still");
    drop(servers);
}

/// Chunk tokens on the data plane, end to end over TLS: the master stamps a token for the
/// caller (its certificate's name) on every location and lease; a chunkserver refuses every
/// data-plane operation (read, append, append at an offset, flush) without a token, with a
/// forged one or another master's, one for another chunk, one short of the right, or an
/// expired one, before any work, and serves on; a client whose tokens ran out gets new ones and reads on as if nothing
/// happened; and a restarted master keeps its key, so tokens it issued before still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_requests_need_a_live_token_the_master_issued_and_clients_renew_theirs() {
    use gfs_dataplane::{ChunkRef, DataClient, DataError};
    use gfs_host::token::{Rights, TokenKey};

    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    issue(&certs);
    let master_cfg = |listen: &str| MasterConfig {
        lease: Duration::from_secs(1),
        token_lifetime: Duration::from_secs(4),
        ..master_config(dir.path(), &certs, listen)
    };
    let master = Master::start(master_cfg("127.0.0.1:0")).await.unwrap();
    let maddr = master.addr.to_string();
    let servers = tls_servers(dir.path(), &certs, &maddr).await;
    // Locations outlive their tokens in the cache: the client must renew them itself.
    let client = tls_client(
        &maddr,
        &certs,
        "client",
        ClientConfig {
            cache_ttl: Duration::from_secs(600),
            ..ClientConfig::default()
        },
    )
    .await;
    let admin = tls_client(&maddr, &certs, "admin", ClientConfig::default()).await;
    gfs_testkit::fixture::registered(&admin, 3).await;
    client.create("/t").await.unwrap();
    client.create("/u").await.unwrap();
    let off = client.append("/t", &b"guarded bytes"[..]).await.unwrap();
    client.append("/u", &b"other"[..]).await.unwrap();
    let t = client.refresh("/t").await.unwrap().chunks[0].clone();
    let u = client.refresh("/u").await.unwrap().chunks[0].clone();

    // The token names the chunk, a read right and the caller's certificate name, under the
    // key in the master's data directory.
    let key = std::fs::read(dir.path().join("master").join(gfs_master::tokens::KEY_FILE)).unwrap();
    let key = TokenKey::from_bytes(&key).unwrap();
    let grant = key.open(&t.token).unwrap();
    assert_eq!((grant.handle, grant.version), (t.handle, t.version));
    assert_eq!(grant.rights, Rights::READ);
    assert_eq!(grant.client, "alice");

    let replica = &t.replicas[0];
    let dc = DataClient::connect(&replica.data_addr, gfs_dataplane::ClientConfig::default())
        .await
        .unwrap();
    let n = 13;
    assert_eq!(
        &dc.read(&t.chunk_ref(), off, n).await.unwrap()[..],
        b"guarded bytes"
    );
    // Every data-plane operation with every kind of bad token: each refused, with why, before
    // any work (the file's size does not move), on the one connection, which serves on.
    let size = client.size("/t").await.unwrap();
    let now_ms = gfs_util::time::unix_ms(std::time::SystemTime::now());
    let grant = |handle, rights, expires_unix_ms| gfs_host::token::Grant {
        handle,
        version: t.version,
        rights,
        expires_unix_ms,
        client: "alice".into(),
    };
    let good_append = key.issue(&grant(t.handle, Rights::APPEND, now_ms + 60_000));
    let mut forged = good_append.clone();
    forged[20] ^= 0x40;
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("no token", Vec::new(), "no chunk token"),
        ("a forged token", forged, "not issued by this cluster"),
        (
            "another master's token",
            TokenKey::generate().issue(&grant(t.handle, Rights::APPEND, u64::MAX)),
            "not issued by this cluster",
        ),
        (
            "an expired token",
            key.issue(&grant(t.handle, Rights::APPEND, now_ms - 1)),
            "expired",
        ),
        (
            "another chunk's token",
            key.issue(&grant(u.handle, Rights::APPEND, u64::MAX)),
            "is for chunk",
        ),
        ("a read token", t.token.to_vec(), "does not allow"),
    ];
    let mut walked = 0;
    for (what, token, why) in &bad {
        let c = ChunkRef::new(t.handle, t.version, token.clone());
        let x = || bytes::Bytes::from_static(b"x");
        let answers = [
            ("read", dc.read(&c, off, n).await.map(drop)),
            ("append", dc.append(&c, 7, x()).await.map(drop)),
            (
                "append_at",
                dc.append_at(&c, 8, Some(size), x()).await.map(drop),
            ),
            ("flush", dc.flush(&c).await.map(drop)),
        ];
        for (op, got) in answers {
            if *what == "a read token" && op == "read" {
                assert!(got.is_ok(), "a read token reads: {got:?}");
                continue;
            }
            match got {
                Err(DataError::BadToken(m)) => assert!(m.contains(why), "{op} with {what}: {m}"),
                other => panic!("{op} with {what}: {other:?}"),
            }
            walked += 1;
        }
    }
    assert_eq!(
        walked,
        4 * bad.len() - 1,
        "every operation with every bad token"
    );
    assert_eq!(
        client.size("/t").await.unwrap(),
        size,
        "a refused request did work"
    );
    assert_eq!(
        &dc.read(&t.chunk_ref(), off, n).await.unwrap()[..],
        b"guarded bytes"
    );
    let refused_total = |s: &ChunkServer| {
        s.metrics()
            .render()
            .lines()
            .find(|l| l.starts_with("gfs_chunkserver_token_refused_total "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap()
    };
    let before: u64 = servers.iter().map(refused_total).sum();
    assert!(before >= walked as u64, "{before} refusals counted");

    // Past the tokens' lifetime: the old token is refused, and the client, whose cached
    // locations carry it, is refused once, renews, and reads on.
    tokio::time::sleep(Duration::from_millis(4_300)).await;
    match dc.read(&t.chunk_ref(), off, n).await {
        Err(DataError::BadToken(m)) => assert!(m.contains("expired"), "{m}"),
        other => panic!("an expired location's token: {other:?}"),
    }
    assert_eq!(
        &client.read("/t", off, 13).await.unwrap()[..],
        b"guarded bytes"
    );
    let after: u64 = servers.iter().map(refused_total).sum();
    assert!(
        after >= before + 2,
        "the client's expired token was refused ({before} -> {after})"
    );
    let off2 = client.append("/t", &b"and more"[..]).await.unwrap();
    assert_eq!(&client.read("/t", off2, 8).await.unwrap()[..], b"and more");

    // A restarted master keeps its key: a token from before the restart still works once the
    // chunkservers have registered again.
    let fresh = client.refresh("/t").await.unwrap().chunks[0].clone();
    master.shutdown_token().cancel();
    master.wait().await.unwrap();
    let again = Master::start(master_cfg(&maddr)).await.unwrap();
    gfs_testkit::fixture::registered(&admin, 3).await;
    let dc = DataClient::connect(
        &fresh.replicas[0].data_addr,
        gfs_dataplane::ClientConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        &dc.read(&fresh.chunk_ref(), off, n).await.unwrap()[..],
        b"guarded bytes"
    );
    drop(servers);
    again.shutdown_token().cancel();
}

/// TLS on the data plane (issue 15), end to end: `cs0` takes only TLS there
/// (`[tls] data_plane = true`), `cs1` and `cs2` take both. A client that connects over TLS
/// writes and reads through all three; a plaintext connection to `cs0` is refused with a
/// clear error, while `cs1` still serves one; over TLS each chunk token must name the
/// connection's certificate (the admin's certificate with alice's token is refused); a client
/// holding another CA's certificate cannot connect; and every server serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_plane_over_tls_serves_only_tokens_issued_to_the_connection_s_certificate() {
    use gfs_dataplane::{DataClient, DataError};

    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    issue(&certs);
    let master = Master::start(master_config(dir.path(), &certs, "127.0.0.1:0"))
        .await
        .unwrap();
    let maddr = master.addr.to_string();
    let servers = tls_servers_with(dir.path(), &certs, &maddr, |i| i == 0).await;
    let data_tls = |file: &str| {
        Net::os().with_tls(Arc::new(
            Tls::load(&TlsFiles::in_dir(&certs, file))
                .unwrap()
                .with_data_plane(true),
        ))
    };
    let client = Client::connect_with(
        &maddr,
        ClientConfig {
            net: data_tls("client"),
            ..ClientConfig::default()
        },
    )
    .await
    .unwrap();
    let admin = tls_client(&maddr, &certs, "admin", ClientConfig::default()).await;
    gfs_testkit::fixture::registered(&admin, 3).await;
    client.create("/t").await.unwrap();
    let record = b"private bytes".repeat(1000);
    let off = client
        .append("/t", bytes::Bytes::from(record.clone()))
        .await
        .unwrap();
    assert_eq!(
        &client.read("/t", off, record.len() as u64).await.unwrap()[..],
        &record[..]
    );
    let t = client.refresh("/t").await.unwrap().chunks[0].clone();
    assert_eq!(
        t.replicas.len(),
        3,
        "every server took the appends over TLS"
    );
    let addr_of = |i: usize| servers[i].data_addr.to_string();
    let n = record.len() as u32;
    // A data-plane connection to server `i` over TLS, as the certificate `file`.
    let over_tls = |i, file: &'static str| {
        let addr = addr_of(i);
        let net = data_tls(file);
        async move {
            let cfg = gfs_dataplane::ClientConfig {
                net,
                ..gfs_dataplane::ClientConfig::default()
            };
            DataClient::connect(&addr, cfg).await.unwrap()
        }
    };

    // Over TLS, as alice, on every server: alice's token reads.
    for i in 0..3 {
        let dc = over_tls(i, "client").await;
        assert_eq!(
            &dc.read(&t.chunk_ref(), off, n).await.unwrap()[..],
            &record[..]
        );
    }
    // Plaintext: refused by cs0, which says why; served by cs1.
    let plain = |i| {
        let addr = addr_of(i);
        async move {
            DataClient::connect(&addr, gfs_dataplane::ClientConfig::default())
                .await
                .unwrap()
        }
    };
    match plain(0).await.read(&t.chunk_ref(), off, n).await {
        Err(DataError::Unavailable(m)) => assert!(m.contains("TLS only"), "{m}"),
        other => panic!("plaintext to a TLS-only data plane: {other:?}"),
    }
    let dc = plain(1).await;
    assert_eq!(
        &dc.read(&t.chunk_ref(), off, n).await.unwrap()[..],
        &record[..]
    );
    // Over TLS as the admin ("ops"), alice's token is refused on every server.
    for i in 0..3 {
        let dc = over_tls(i, "admin").await;
        match dc.read(&t.chunk_ref(), off, n).await {
            Err(DataError::BadToken(m)) => {
                assert!(m.contains("\"alice\", not to \"ops\""), "cs{i}: {m}")
            }
            other => panic!("cs{i}: alice's token over ops's connection: {other:?}"),
        }
    }
    // Another CA's certificate: no connection (the server's certificate is not of its CA,
    // nor its own of the server's).
    let rogue = Net::os().with_tls(Arc::new(
        Tls::load(&TlsFiles::in_dir(&certs.join("rogue"), "admin"))
            .unwrap()
            .with_data_plane(true),
    ));
    let connected = DataClient::connect(
        &addr_of(0),
        gfs_dataplane::ClientConfig {
            net: rogue,
            ..gfs_dataplane::ClientConfig::default()
        },
    )
    .await;
    let refused = match connected {
        Err(_) => true,
        Ok(dc) => dc.read(&t.chunk_ref(), off, n).await.is_err(),
    };
    assert!(refused, "a rogue CA's client was served");
    // Every server serves on.
    let more = client.append("/t", &b"and more"[..]).await.unwrap();
    assert_eq!(&client.read("/t", more, 8).await.unwrap()[..], b"and more");
    drop(servers);
    master.shutdown_token().cancel();
}

/// The deployment path with real processes: `gfs-cluster certs` issues the CA and each role's
/// certificate, `gfs-master` and `gfs-chunkserver` serve with `--certs`, and the `gfs` CLI
/// works through them with `--certs` (a client certificate for data, an admin one for the
/// admin plane); without certificates it gets a clear error and a server refuses to start.
#[test]
fn servers_and_the_cli_run_on_certificates_gfs_cluster_certs_issued() {
    use gfs_testkit::fixture::Server;
    use gfs_testkit::master_proc::MasterProc;
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let issue = |role: &str, name: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_gfs-cluster"))
            .arg("certs")
            .arg(&certs)
            .args([role, name, "--host", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    issue("master", "master");
    for i in 0..3 {
        issue("chunkserver", &format!("cs{i}"));
    }
    issue("client", "client");
    issue("admin", "admin");
    let c = certs.to_str().unwrap();
    // No certificates and no --insecure: the server says why it will not start.
    let out = Command::new(env!("CARGO_BIN_EXE_gfs-master"))
        .args(["--listen", "127.0.0.1:0", "--http-listen", ""])
        .arg("--dir")
        .arg(dir.path().join("refused"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no certificates") && err.contains("insecure"),
        "{err}"
    );

    let master = MasterProc::start_with(&dir.path().join("master"), "127.0.0.1:0", &["--certs", c]);
    let _servers = Server::with_master_args(dir.path(), 3, &master.addr, &["--certs", c]);
    let gfs = |args: &[&str], stdin: &[u8], certs: Option<&str>| {
        use std::io::Write;
        let mut cmd = Command::new(gfs_testkit::bin("gfs"));
        cmd.args(["--master", &master.addr])
            .args(args)
            .env_remove("GFS_CERTS");
        if let Some(c) = certs {
            cmd.args(["--certs", c]);
        }
        let mut child = cmd
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = gfs(&["admin", "report", "--json"], b"", Some(c));
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.matches("\"alive\"").count() >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never 3 alive: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = gfs(&["append", "/log", "-"], b"over tls\n", Some(c));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = gfs(&["cat", "/log"], b"", Some(c));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");
    let out = gfs(&["ls", "/"], b"", None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--certs"), "a hint at what is missing: {err}");
}
