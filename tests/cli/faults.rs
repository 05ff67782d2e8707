//! A chunkserver SIGKILLed in the middle of a `gfs put`; a `gfs append` started while the
//! master is down; `gfs health` of healthy and unhealthy servers.

use std::time::{Duration, Instant};

use crate::env::{CHUNK, Gfs, Running, assert_same, random_bytes};
use gfs_testkit::master_proc::MasterProc;

/// The put streams from stdin, so the test holds it mid-file while it kills a replica of the
/// chunk being written (sometimes its primary, sometimes a secondary: the master lists replicas
/// in no particular order). The put must then either succeed with every byte in place, or fail
/// with one error line: never exit 0 with a short or damaged file.
#[test]
fn a_chunkserver_killed_during_put_never_yields_a_short_file() {
    let mut gfs = Gfs::start(4);
    let data = random_bytes(8 * CHUNK, "kill during put");
    let mut put = Running::spawn(gfs.command().args(["put", "-", "/victim"]));
    // A chunk and a half: the first chunk fills and the second one starts.
    let first = CHUNK * 3 / 2;
    put.feed(&data[..first]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let out = gfs.run(&["stat", "--json", "/victim"]);
        if out.code == 0 {
            let st = out.json();
            let chunks = st["chunks"].as_array().unwrap();
            if chunks.len() >= 2 {
                let last = &chunks[chunks.len() - 1];
                break last["replicas"][0]["id"].as_str().unwrap().to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the put never reached its second chunk: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let i = gfs.servers.iter().position(|s| s.id == victim).unwrap();
    eprintln!("killing {victim}, a replica of the chunk being written");
    gfs.servers[i].kill();
    put.feed(&data[first..]);
    let out = put.wait();
    match out.code {
        0 => {
            assert!(
                out.stderr.lines().all(|l| !l.starts_with("error: ")),
                "{out:?}"
            );
            assert_eq!(gfs.stat("/victim")["size"], data.len() as u64);
            assert_same(
                &gfs.get("/victim"),
                &data,
                "/victim after the put succeeded",
            );
            eprintln!("the put succeeded despite the kill; the file is byte-exact");
        }
        1 => {
            let err = out.error_line();
            eprintln!("the put failed cleanly: {err}");
        }
        c => panic!("unexpected exit {c}: {out:?}"),
    }
    // The cluster still takes new files on the three servers left.
    gfs.put(b"after the kill", "/after");
    assert_eq!(gfs.ok(&["cat", "/after"]), b"after the kill");
}

/// Issue 12, part 3: `gfs append` started while the master is down (killed) retries, like any
/// other transient failure, and succeeds once the master is back on its directory and port,
/// within its deadline; before, it failed at once ("is gfs-master running there?").
#[test]
fn an_append_started_while_the_master_is_down_succeeds_once_it_returns() {
    let mut gfs = Gfs::start(3);
    let first = gfs.run_in(&["append", "/m"], b"before the crash");
    assert_eq!(first.code, 0, "{first:?}");
    let addr = gfs.master.addr.clone();
    gfs.master.kill();
    let local = gfs.local("record");
    std::fs::write(&local, b"while the master was down").unwrap();
    let append =
        Running::spawn(
            gfs.command()
                .args(["append", "--json", "/m", local.to_str().unwrap()]),
        );
    // The outage the append has to ride out.
    std::thread::sleep(Duration::from_secs(2));
    gfs.master = MasterProc::start(&gfs.dir.path().join("master"), &addr);
    let out = append.wait();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["offset"], 16, "{out:?}");
    assert_eq!(
        gfs.ok(&["cat", "/m"]),
        b"before the crashwhile the master was down"
    );
}

/// `gfs health`: a master's and a chunkserver's `/health` answer 200 and exit 0 (the image's
/// health check); a chunkserver whose data directory is gone answers 503 and the command exits
/// 1, as it does, within its bound, for an address nobody listens on.
#[test]
fn health_exits_0_only_when_the_server_says_it_is_healthy() {
    let g = Gfs::start(3);
    let out = g.run(&["health", &g.master.http]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.text().starts_with("ok"), "{out:?}");
    let cs = &g.servers[0];
    let out = g
        .command()
        .args(["health"])
        .env("GFS_HEALTH_ADDR", &cs.http)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A lost disk: the directory moved away, as check_disk sees it.
    std::fs::rename(&cs.dir, g.local("lost")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = g.run(&["health", &cs.http]);
        if out.code == 1 {
            assert!(out.error_line().contains("503"), "{out:?}");
            break;
        }
        assert!(Instant::now() < deadline, "still healthy: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = free.local_addr().unwrap().to_string();
    drop(free);
    let line = g.fails(&["health", &nobody]);
    assert!(line.contains(&nobody), "{line}");
}
