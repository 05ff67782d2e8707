//! Three masters' Raft over real gRPC on loopback: election, replication, refusals, failover
//! when the leader stops, and a master that was away catching up by snapshot.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gfs_util::disk::OsDisk;
use openraft::{Config, Raft, SnapshotPolicy};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::record::PathOp;

/// One master: its Raft, its state machine, and the server serving its RPCs.
struct Running {
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

fn config() -> Arc<Config> {
    Arc::new(
        Config {
            cluster_name: "gfs-test".into(),
            // Elections well past a loaded machine's pauses (CI runs these beside the other
            // tests on two cores): a leader lost to a pause fails the tests that need one.
            heartbeat_interval: 100,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            // A snapshot every 40 entries, and the log before it purged at once: a master
            // that was away past it can only catch up by snapshot.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(40),
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..Config::default()
        }
        .validate()
        .unwrap(),
    )
}

/// Master `id` of the group at `addrs`, from `dir`.
async fn start(id: u64, dir: &std::path::Path, addrs: &[String]) -> Running {
    let listener = tokio::net::TcpListener::bind(&addrs[id as usize - 1])
        .await
        .unwrap();
    let member = Member::open(
        OsDisk::shared(),
        dir,
        (id, addrs, false),
        config(),
        gfs_host::Net::os(),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let service = member.service();
    let served = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                token.cancelled(),
            )
            .await;
    });
    Running {
        raft: member.raft,
        sm: member.sm,
        stop,
        served,
    }
}

impl Running {
    async fn stop(self) {
        self.raft.shutdown().await.unwrap();
        self.stop.cancel();
        let _ = self.served.await;
    }
}

fn mkdir(path: String) -> Proposal {
    Proposal {
        ops: vec![Op::Mkdir(PathOp { path, mtime_ms: 0 })],
    }
}

/// The leader as `members` see it, once one is elected (within 10 s).
async fn leader(members: &BTreeMap<u64, Running>) -> u64 {
    for _ in 0..200 {
        for m in members.values() {
            if let Some(l) = m.raft.metrics().borrow().current_leader
                && members.contains_key(&l)
            {
                return l;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader elected within 10 s");
}

/// Writes `proposal` through whoever leads `members`: a loaded machine's pause can cost the
/// leader its term (elections time out after 1 to 2 s here), and a write refused with
/// `ForwardToLeader` was not appended, so it goes to the new leader (within 10 s).
async fn write(
    members: &BTreeMap<u64, Running>,
    proposal: Proposal,
) -> openraft::raft::ClientWriteResponse<TypeConfig> {
    for _ in 0..100 {
        let lead = leader(members).await;
        match members[&lead].raft.client_write(proposal.clone()).await {
            Ok(r) => return r,
            Err(e) if e.forward_to_leader().is_some() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("write refused: {e}"),
        }
    }
    panic!("no leader took the write within 10 s");
}

/// The metadata store over master `id`'s replicated log.
fn store_on(members: &BTreeMap<u64, Running>, id: u64) -> crate::MetaStore {
    crate::MetaStore::replicated(
        Replicated::new(members[&id].raft.clone(), members[&id].sm.clone()),
        OsDisk::shared(),
    )
}

/// Makes `/d` through the leader, taken as the master that takes that mutation (one a member
/// names may have lost its term to a loaded machine's pause since; a refused entry was not
/// appended), within 10 s; returns it and the store on it.
async fn mkdir_d_through_the_leader(members: &BTreeMap<u64, Running>) -> (u64, crate::MetaStore) {
    for _ in 0..100 {
        let lead = leader(members).await;
        let store = store_on(members, lead);
        match store.mutate(mkdir("/d".into()).ops[0].clone()).await {
            Ok(_) => return (lead, store),
            Err(MasterError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no leader took a mutation within 10 s");
}

/// Every name under `/` on `m`, sorted.
fn names(m: &Running) -> Vec<String> {
    let mut names: Vec<String> =
        m.sm.read(|ns| ns.list("/").unwrap())
            .into_iter()
            .map(|s| s.path)
            .collect();
    names.sort();
    names
}

/// Waits until every member has applied `index` (within 10 s).
async fn applied(members: &BTreeMap<u64, Running>, index: u64) {
    for m in members.values() {
        m.raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(index), "applied")
            .await
            .unwrap();
    }
}

/// Three masters in fresh directories on free loopback ports.
struct Cluster {
    dirs: Vec<tempfile::TempDir>,
    addrs: Vec<String>,
    members: BTreeMap<u64, Running>,
}

async fn cluster() -> Cluster {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Free ports, taken and released: the masters bind them again at once.
    let addrs: Vec<String> = (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        })
        .collect();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        members.insert(id, start(id, dirs[id as usize - 1].path(), &addrs).await);
    }
    Cluster {
        dirs,
        addrs,
        members,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_replicate_fail_over_and_catch_up_by_snapshot() {
    let Cluster {
        dirs,
        addrs,
        mut members,
    } = cluster().await;

    // Writes through the leader apply on every master, in order; one that does not apply
    // (the directory exists by then) changes nothing and says why.
    let first = leader(&members).await;
    for i in 0..30 {
        let r = write(&members, mkdir(format!("/a{i:03}"))).await;
        assert!(r.data.iter().all(Result::is_ok), "{:?}", r.data);
    }
    let again = write(&members, mkdir("/a000".into())).await;
    assert!(matches!(
        again.data[..],
        [Err(MasterError::AlreadyExists(_))]
    ));
    applied(&members, again.log_id.index).await;
    let want: Vec<String> = (0..30).map(|i| format!("/a{i:03}")).collect();
    for m in members.values() {
        assert_eq!(names(m), want);
    }

    // The leader stops: the other two elect one of themselves and go on; past a snapshot
    // whose entries they purge.
    let old = members.remove(&first).unwrap();
    old.stop().await;
    let second = leader(&members).await;
    assert_ne!(second, first);
    let mut last = 0;
    for i in 0..100 {
        let r = write(&members, mkdir(format!("/b{i:03}"))).await;
        assert!(r.data.iter().all(Result::is_ok), "{:?}", r.data);
        last = r.log_id.index;
    }
    applied(&members, last).await;
    let past = again.log_id.index;
    let purged = members[&second]
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > past),
            "the leader purges past what the stopped master holds",
        )
        .await;
    assert!(purged.is_ok(), "{purged:?}");

    // The old leader comes back from its directory and catches up, by snapshot.
    let i = first as usize - 1;
    members.insert(first, start(first, dirs[i].path(), &addrs).await);
    applied(&members, last).await;
    let snapshot = members[&first].raft.metrics().borrow().snapshot;
    assert!(
        snapshot.is_some_and(|s| s.index > again.log_id.index),
        "{snapshot:?}"
    );
    let reference = names(&members[&second]);
    assert_eq!(reference.len(), 130);
    for m in members.values() {
        assert_eq!(names(m), reference);
    }
    for (_, m) in members {
        m.stop().await;
    }
}

/// The metadata store over the replicated log: the leader's mutations are answered once
/// applied, with the chunks a delete removed or why they did not apply; every master reads
/// them; a follower refuses mutations with `NotLeader`, naming the leader's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_metastore_mutates_on_the_leader_and_names_it_elsewhere() {
    let Cluster {
        dirs: _dirs,
        addrs,
        members,
    } = cluster().await;
    let (lead, on_leader) = mkdir_d_through_the_leader(&members).await;
    let err = on_leader
        .mutate(mkdir("/d".into()).ops[0].clone())
        .await
        .unwrap_err();
    assert!(matches!(err, MasterError::AlreadyExists(_)), "{err}");
    let seq = on_leader.durable_seq();
    applied(&members, seq).await;
    let follower = members.keys().copied().find(|id| *id != lead).unwrap();
    let on_follower = store_on(&members, follower);
    assert!(on_follower.read(|ns| ns.stat("/d").is_ok()).await.unwrap());
    let err = on_follower
        .mutate(mkdir("/e".into()).ops[0].clone())
        .await
        .unwrap_err();
    match err {
        MasterError::NotLeader { leader } => {
            assert_eq!(leader.as_deref(), Some(addrs[lead as usize - 1].as_str()));
        }
        other => panic!("{other}"),
    }
    let status = crate::service::status(MasterError::NotLeader {
        leader: Some(addrs[lead as usize - 1].clone()),
    });
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status
            .metadata()
            .get(crate::service::LEADER_HEADER)
            .unwrap(),
        addrs[lead as usize - 1].as_str()
    );
    assert!(on_leader.read(|ns| ns.stat("/e").is_err()).await.unwrap());
    for (_, m) in members {
        m.stop().await;
    }
}

/// Every master stops at once and starts again from its directory: they elect a leader, hold
/// every entry that was committed, agree, and take writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_masters_restarted_at_once_keep_every_committed_entry() {
    let Cluster {
        dirs,
        addrs,
        mut members,
    } = cluster().await;
    let lead = leader(&members).await;
    let mut last = 0;
    for i in 0..50 {
        let r = write(&members, mkdir(format!("/c{i:03}"))).await;
        last = r.log_id.index;
    }
    applied(&members, last).await;
    let before = names(&members[&lead]);
    for (_, m) in std::mem::take(&mut members) {
        m.stop().await;
    }
    for id in 1..=3u64 {
        members.insert(id, start(id, dirs[id as usize - 1].path(), &addrs).await);
    }
    leader(&members).await;
    let r = write(&members, mkdir("/after".into())).await;
    assert!(r.data.iter().all(Result::is_ok), "{:?}", r.data);
    assert!(r.log_id.index > last);
    applied(&members, r.log_id.index).await;
    let mut want = before;
    want.push("/after".into());
    want.sort();
    for m in members.values() {
        assert_eq!(names(m), want);
    }
    for (_, m) in members {
        m.stop().await;
    }
}

/// Mutations that reach the leader while an entry is being committed go together as the next
/// entry: 200 concurrent creates take far fewer entries than 200, and each is answered with
/// its own result (a create of a path that exists fails alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mutations_share_entries_and_keep_their_own_results() {
    let Cluster {
        dirs: _dirs,
        addrs: _addrs,
        members,
    } = cluster().await;
    let (lead, store) = mkdir_d_through_the_leader(&members).await;
    let store = std::sync::Arc::new(store);
    let before = members[&lead]
        .raft
        .metrics()
        .borrow()
        .last_log_index
        .unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = std::sync::Arc::clone(&store);
            // Every tenth a second time: it fails, the others do not.
            let path = format!("/d/f{:03}", if i % 10 == 9 { i - 1 } else { i });
            tokio::spawn(async move { store.mutate(mkdir(path).ops[0].clone()).await })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => {}
            Err(MasterError::AlreadyExists(_)) => failed += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(failed, 20);
    let after = members[&lead]
        .raft
        .metrics()
        .borrow()
        .last_log_index
        .unwrap();
    assert!(
        after - before < 100,
        "{} entries for 200 mutations",
        after - before
    );
    let listed = store.read(|ns| ns.list("/d").unwrap().len()).await.unwrap();
    assert_eq!(listed, 180);
    for (_, m) in members {
        m.stop().await;
    }
}
