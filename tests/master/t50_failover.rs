//! Issue 16: three `gfs-master` processes replicating the operation log by Raft; the leader
//! SIGKILLed again and again under record appends and namespace mutations from several
//! clients. After every kill a new leader serves within seconds; at the end every
//! acknowledged record is in the file exactly once at its offset (nothing never sent, the
//! replicas byte-identical, fsck clean), and every acknowledged create, rename and delete is
//! in the namespace, on every master alike (each asked for its own state by a stale read).
//!
//! `GFS_FAILOVER_KILLS` sets how many leaders are killed (3 by default; the soak is
//! 100); each kill prints the time to the first create and to a new client's first append.

use super::*;

/// A group of three masters on fixed loopback ports, each in `dir/m<i>`.
struct Group {
    dir: std::path::PathBuf,
    addrs: Vec<String>,
    procs: Vec<Option<MasterProc>>,
    /// More flags for every master.
    extra: Vec<String>,
}

impl Group {
    fn start(dir: &Path) -> Group {
        Self::start_with(dir, &[])
    }

    /// [`Group::start`], every master also given `extra` flags.
    fn start_with(dir: &Path, extra: &[&str]) -> Group {
        let base = gfs_testkit::free_ports(3);
        let addrs: Vec<String> = (base..base + 3).map(|p| format!("127.0.0.1:{p}")).collect();
        let mut g = Group {
            dir: dir.to_path_buf(),
            addrs,
            procs: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        g.procs = (0..3).map(|i| Some(g.member(i))).collect();
        g
    }

    /// Master `i` (from 0), started on its directory and port.
    fn member(&self, i: usize) -> MasterProc {
        let (members, id) = (self.addrs.join(","), (i + 1).to_string());
        let mut args = vec![
            "--raft-members",
            &members,
            "--raft-id",
            &id,
            "--lease",
            "10s",
        ];
        args.extend(self.extra.iter().map(String::as_str));
        MasterProc::start_with(&self.dir.join(format!("m{i}")), &self.addrs[i], &args)
    }

    /// The list clients and chunkservers are given.
    fn list(&self) -> String {
        self.addrs.join(",")
    }

    /// The master that says it leads (its `/health` counts chunkservers; a follower's names
    /// the leader), waiting up to `within` for one.
    async fn leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            for (i, p) in self.procs.iter().enumerate() {
                if let Some(p) = p {
                    let (code, body) = gfs_testkit::http_get(&p.http, "/health");
                    if code == 200 && !body.contains("follower") {
                        return i;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no master leads after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What the namespace workload did: for each name number, the entries it may have at the end
/// (two outcomes when its last mutation failed without saying whether it was carried out).
type Names = Vec<Vec<Vec<String>>>;

/// Creates `/ns/f<i>`, renames every third to `/ns/r<i>`, deletes every fifth, until `stop`.
/// A failed mutation ends name `i`'s steps and leaves both of its outcomes allowed.
async fn namespace_load(c: Client, stop: Arc<AtomicBool>) -> Names {
    let mut allowed = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let (f, r) = (format!("/ns/f{i:05}"), format!("/ns/r{i:05}"));
        allowed.push(name_steps(&c, i, &f, &r).await);
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    allowed
}

/// Name `i`'s steps; what may be there at the end.
async fn name_steps(c: &Client, i: usize, f: &str, r: &str) -> Vec<Vec<String>> {
    let (none, at_f, at_r) = (vec![], vec![f.to_string()], vec![r.to_string()]);
    let started = Instant::now();
    let created = c.create(f).await;
    if started.elapsed() > Duration::from_secs(2) {
        println!("create {f} took {:?}", started.elapsed());
    }
    if let Err(e) = created {
        println!("create {f} not acknowledged: {e}");
        return vec![none, at_f];
    }
    let mut now = at_f;
    if i.is_multiple_of(3) {
        if let Err(e) = c.rename(f, r).await {
            println!("rename {f} not acknowledged: {e}");
            return vec![now, at_r];
        }
        now = at_r;
    }
    if i.is_multiple_of(5) {
        if let Err(e) = c.delete(&now[0], false).await {
            println!("delete {} not acknowledged: {e}", now[0]);
            return vec![now, none];
        }
        now = none;
    }
    vec![now]
}

/// The names under `dir` as the leader lists them.
async fn names(c: &Client, dir: &str) -> std::collections::BTreeSet<String> {
    c.list(dir)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect()
}

/// A group of three masters in `dir`, three chunkservers registered with it, a patient client
/// and the directory `/ns`.
async fn group_with_servers(dir: &Path) -> (Group, Vec<Server>, Client) {
    let group = Group::start(dir);
    let servers = Server::with_master(dir, 3, &group.list());
    let c = patient(&group.list(), Duration::from_secs(120)).await;
    gfs_testkit::fixture::registered(&c, 3).await;
    c.mkdir("/ns", false).await.unwrap();
    (group, servers, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_master_loses_and_duplicates_nothing() {
    let kills: usize = std::env::var("GFS_FAILOVER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let (mut group, mut servers, c) = group_with_servers(dir.path()).await;
    c.create("/log").await.unwrap();
    let writers = appenders(&c, "/log", 0..3);
    writers.until_acked(20, Duration::from_secs(60)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let names_client = patient(&group.list(), Duration::from_secs(60)).await;
    let load = tokio::spawn(namespace_load(names_client, Arc::clone(&stop)));

    let (mut to_create, mut to_append) = (Vec::new(), Vec::new());
    let mut h = History::new();
    for kill in 0..kills {
        let leader = group.leader(Duration::from_secs(30)).await;
        let acked = writers.acked();
        group.procs[leader].as_mut().unwrap().kill();
        let killed = Instant::now();
        // A create through a client that knew the old leader (retried, as a call cut off
        // mid-way by the kill is ambiguous), and a new client's first append to the existing
        // file (no lease cached: the new leader must grant one).
        c.ensure_file(&format!("/probe{kill}")).await.unwrap();
        to_create.push(killed.elapsed());
        let fresh = patient(&group.list(), Duration::from_secs(60)).await;
        tracked_append(&fresh, "/log", &mut h, 100 + kill as u32, 0).await;
        to_append.push(killed.elapsed());
        println!(
            "kill {kill}: master {leader} killed; first create after {:?}, a new client's first append after {:?}",
            to_create[kill], to_append[kill]
        );
        writers
            .until_acked(acked + 10, Duration::from_secs(60))
            .await;
        // The killed master comes back on its directory and port, and catches up.
        group.procs[leader] = Some(group.member(leader));
    }
    stop.store(true, Ordering::SeqCst);
    let names_done = load.await.unwrap();
    writers.stop();
    h.merge(writers.join().await);

    // Every acknowledged namespace mutation is there, nothing else.
    let listed = names(&c, "/ns").await;
    let mut expected_any = std::collections::BTreeSet::new();
    for (i, states) in names_done.iter().enumerate() {
        let here: std::collections::BTreeSet<String> = listed
            .iter()
            .filter(|n| n.ends_with(&format!("{i:05}")))
            .cloned()
            .collect();
        let ok = states
            .iter()
            .any(|s| s.iter().cloned().collect::<std::collections::BTreeSet<_>>() == here);
        assert!(ok, "name {i}: {here:?} is none of {states:?}");
        expected_any.extend(states.iter().flatten().cloned());
    }
    assert!(
        listed.iter().all(|n| expected_any.contains(n)),
        "names never created: {:?}",
        listed.difference(&expected_any).collect::<Vec<_>>()
    );
    println!(
        "{} namespace steps checked, {} names at the end",
        names_done.len(),
        listed.len()
    );
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "{kills} leader kills: median to the first create {:?}, to a new client's first append {:?}",
        median(&mut to_create),
        median(&mut to_append)
    );
    same_namespace_everywhere(&group, &listed).await;
    check_promise(&c, "/log", &h, &mut servers).await;
}

/// Every master lists `/ns` as `want` (the leader's), asked for its own state (a stale read),
/// once it has applied what the leader has (within 10 s).
async fn same_namespace_everywhere(group: &Group, want: &std::collections::BTreeSet<String>) {
    let cfg = ClientConfig {
        stale_reads: true,
        op_deadline: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    for addr in &group.addrs {
        let one = Client::connect_with(addr, cfg.clone()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // A master that restarted lists nothing (not even /ns) until it applied the log.
            let here = match one.list("/ns").await {
                Ok(entries) => entries.into_iter().map(|e| e.path).collect(),
                Err(e) => {
                    println!("master {addr}: {e}");
                    std::collections::BTreeSet::new()
                }
            };
            if &here == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "master {addr} lists {} names under /ns, the leader {}",
                here.len(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("every master lists the same {} names under /ns", want.len());
}

/// A leader paused (SIGSTOP) past an election and resumed (SIGCONT) grants nothing: asked at
/// once for the first chunk of a file, which needs the chunk logged, it refuses until it
/// learns it was deposed, which it does within seconds; the appends going on throughout keep
/// the whole promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_master_grants_nothing_once_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (group, mut servers, c) = group_with_servers(dir.path()).await;
    c.create("/log").await.unwrap();
    c.create("/fresh").await.unwrap();
    let writers = appenders(&c, "/log", 0..3);
    writers.until_acked(20, Duration::from_secs(60)).await;
    let old = group.leader(Duration::from_secs(30)).await;
    let paused = group.procs[old].as_ref().unwrap();
    let mut direct = MasterClient::connect(format!("http://{}", paused.addr))
        .await
        .unwrap();
    paused.signal("STOP");
    let stopped = Instant::now();
    // Another master leads, and the appends go on through it.
    let acked = writers.acked();
    c.ensure_file("/during").await.unwrap();
    writers
        .until_acked(acked + 20, Duration::from_secs(60))
        .await;
    println!(
        "a new leader served {:?} after the pause",
        stopped.elapsed()
    );
    paused.signal("CONT");
    let resumed = Instant::now();
    let mut refusals = 0;
    while resumed.elapsed() < Duration::from_secs(2) {
        let asked = direct
            .append_chunk(AppendChunkRequest {
                path: "/fresh".into(),
            })
            .await;
        match asked {
            Ok(l) => panic!(
                "the resumed leader granted a lease {:?} after {:?}",
                l.into_inner(),
                resumed.elapsed()
            ),
            Err(s) => {
                refusals += 1;
                if refusals == 1 {
                    println!("the resumed leader refused: {s}");
                }
            }
        }
    }
    let (code, body) = gfs_testkit::http_get(&paused.http, "/health");
    assert!(
        code == 200 && body.contains("follower"),
        "2 s after resuming the old leader says {code} {body}"
    );
    writers.stop();
    let h = writers.join().await;
    check_promise(&c, "/log", &h, &mut servers).await;
}

/// Membership change: a fourth master started to join is added (it catches up, then votes and
/// holds the namespace), then the leader is removed; the group keeps serving throughout, and
/// the report lists the group as changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_is_added_to_the_group_and_the_leader_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut group = Group::start(dir.path());
    let c = patient(&group.list(), Duration::from_secs(60)).await;
    for i in 0..20 {
        c.create(&format!("/before{i:02}")).await.unwrap();
    }
    let fourth = format!("127.0.0.1:{}", gfs_testkit::free_ports(1));
    let members = format!("{},{fourth}", group.list());
    let joined = MasterProc::start_with(
        &dir.path().join("m3"),
        &fourth,
        &["--raft-members", &members, "--raft-id", "4", "--raft-join"],
    );
    let masters = c.add_master(4, &fourth).await.unwrap();
    assert_eq!(masters.len(), 4, "{masters:?}");
    // Adding it again (a retry) changes nothing.
    assert_eq!(c.add_master(4, &fourth).await.unwrap().len(), 4);
    c.create("/after").await.unwrap();
    let stale = ClientConfig {
        stale_reads: true,
        op_deadline: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    let on_fourth = Client::connect_with(&fourth, stale).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while on_fourth.list("/").await.map_or(0, |l| l.len()) != 21 {
        assert!(
            Instant::now() < deadline,
            "the new master does not hold the namespace"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let leader = group.leader(Duration::from_secs(10)).await;
    let masters = c.remove_master(leader as u64 + 1).await.unwrap();
    assert_eq!(masters.len(), 3, "{masters:?}");
    assert!(
        masters.iter().all(|m| m.id != leader as u64 + 1),
        "{masters:?}"
    );
    // The removed master is stopped; the other three (the new one among them) serve.
    group.procs[leader].as_mut().unwrap().kill();
    group.procs[leader] = None;
    let all = format!("{},{fourth}", group.list());
    let c = patient(&all, Duration::from_secs(60)).await;
    c.ensure_file("/removed").await.unwrap();
    let report = c.report().await.unwrap();
    assert_eq!(report.masters.len(), 3, "{:?}", report.masters);
    assert_eq!(report.masters.iter().filter(|m| m.leader).count(), 1);
    assert_eq!(c.list("/").await.unwrap().len(), 22);
    drop(joined);
}

/// Every master SIGKILLed at once and started again on its directory: they elect a leader
/// among themselves (each waits three election timeouts to hear one first), every create
/// acknowledged before is there on each, and the appends going on throughout keep the whole
/// promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_master_killed_at_once_and_restarted_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut group, mut servers, c) = group_with_servers(dir.path()).await;
    for i in 0..50 {
        c.create(&format!("/ns/f{i:05}")).await.unwrap();
    }
    c.create("/log").await.unwrap();
    let writers = appenders(&c, "/log", 0..2);
    writers.until_acked(20, Duration::from_secs(60)).await;
    for p in group.procs.iter_mut().flatten() {
        p.kill();
    }
    let killed = Instant::now();
    group.procs = (0..3).map(|i| Some(group.member(i))).collect();
    c.ensure_file("/ns/after").await.unwrap();
    println!(
        "a create {:?} after every master was killed",
        killed.elapsed()
    );
    let acked = writers.acked();
    writers
        .until_acked(acked + 20, Duration::from_secs(60))
        .await;
    writers.stop();
    let h = writers.join().await;
    let listed = names(&c, "/ns").await;
    assert_eq!(listed.len(), 51, "{listed:?}");
    same_namespace_everywhere(&group, &listed).await;
    check_promise(&c, "/log", &h, &mut servers).await;
}

/// A single master's namespace moves into a group: the single master, stopped, starts again
/// on its directory as a group of one; two new masters join it (`add-master`) and get the
/// namespace by the group's first snapshot; with the first one killed, the other two hold
/// every file and serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_masters_namespace_moves_into_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let base = gfs_testkit::free_ports(3);
    let addrs: Vec<String> = (base..base + 3).map(|p| format!("127.0.0.1:{p}")).collect();
    let mut single = MasterProc::start(&dir.path().join("m0"), &addrs[0]);
    let c = patient(&addrs[0], Duration::from_secs(30)).await;
    for i in 0..30 {
        c.create(&format!("/f{i:02}")).await.unwrap();
    }
    single.kill();
    let all = addrs.join(",");
    let mut first = Some(MasterProc::start_with(
        &dir.path().join("m0"),
        &addrs[0],
        &["--raft-members", &addrs[0], "--raft-id", "1"],
    ));
    let joined: Vec<MasterProc> = (1..3)
        .map(|i| {
            MasterProc::start_with(
                &dir.path().join(format!("m{i}")),
                &addrs[i],
                &[
                    "--raft-members",
                    &all,
                    "--raft-id",
                    &(i + 1).to_string(),
                    "--raft-join",
                ],
            )
        })
        .collect();
    let c = patient(&all, Duration::from_secs(60)).await;
    assert_eq!(c.list("/").await.unwrap().len(), 30);
    for (i, addr) in addrs.iter().enumerate().skip(1) {
        let masters = c.add_master(i as u64 + 1, addr).await.unwrap();
        assert_eq!(masters.len(), i + 1, "{masters:?}");
    }
    c.create("/after-join").await.unwrap();
    if let Some(mut m) = first.take() {
        m.kill();
    }
    let c = patient(&all, Duration::from_secs(60)).await;
    c.ensure_file("/after-kill").await.unwrap();
    let names = names(&c, "/").await;
    assert_eq!(names.len(), 32, "{names:?}");
    assert!(names.contains("/f00") && names.contains("/f29"));
    drop(joined);
}

/// A master that was down while the group went on catches up by snapshot. The masters take one
/// every 50 entries (`checkpoint_every`) and purge what it holds (keeping at most openraft's
/// `max_in_snapshot_log_to_keep`, 1,000), so after 1,200 creates from one client, one at a
/// time (an entry each), the leader's log no longer holds the entries after the stopped
/// master's last: started again, it can only be brought up to date by the leader's snapshot
/// (`InstallSnapshot` in its log with `GFS_TEST_LOG=info`). It then holds every name, asked for
/// its own state, and again once SIGKILLed and started on its own directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_missed_what_the_leader_purged_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("master.toml");
    std::fs::write(&config, "checkpoint_every = 50\n").unwrap();
    let config = config.to_str().unwrap().to_string();
    let mut group = Group::start_with(dir.path(), &["--config", &config]);
    let c = patient(&group.list(), Duration::from_secs(30)).await;
    c.create_with_parents("/ns/f00000").await.unwrap();
    let leader = group.leader(Duration::from_secs(10)).await;
    let down = (leader + 1) % 3;
    if let Some(mut p) = group.procs[down].take() {
        p.kill();
    }
    let t = Instant::now();
    for i in 1..1_200 {
        c.create(&format!("/ns/f{i:05}")).await.unwrap();
    }
    println!("1,200 creates with master {down} down in {:?}", t.elapsed());
    let listed = names(&c, "/ns").await;
    assert_eq!(listed.len(), 1_200);
    group.procs[down] = Some(group.member(down));
    let back = Instant::now();
    same_namespace_everywhere(&group, &listed).await;
    println!(
        "master {down} caught up {:?} after its start",
        back.elapsed()
    );
    if let Some(mut p) = group.procs[down].take() {
        p.kill();
    }
    group.procs[down] = Some(group.member(down));
    same_namespace_everywhere(&group, &listed).await;
}
