//! mkdir / ls / stat / rm / mv semantics, JSON shapes, and exit codes.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::env::{CHUNK, Gfs, run};

fn lines(out: Vec<u8>) -> Vec<String> {
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn namespace_commands_and_their_output() {
    let gfs = Gfs::start(3);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;

    // mkdir -p makes the parents and tolerates an existing directory; plain mkdir does not.
    assert!(gfs.ok(&["mkdir", "-p", "/a/b/c"]).is_empty());
    gfs.ok(&["mkdir", "-p", "/a/b"]);
    assert!(
        gfs.fails(&["mkdir", "/x/y"])
            .contains(": no such file or directory")
    );
    assert!(gfs.fails(&["mkdir", "/a"]).contains(": already exists"));

    gfs.put(b"hello", "/a/b/f");
    let data: Vec<u8> = (0..CHUNK + 10).map(|i| i as u8).collect();
    gfs.put(&data, "/a/b/big");

    // ls: one full path per line, in name order; a file lists itself.
    assert_eq!(lines(gfs.ok(&["ls", "/"])), ["/a"]);
    assert_eq!(
        lines(gfs.ok(&["ls", "/a/b"])),
        ["/a/b/big", "/a/b/c", "/a/b/f"]
    );
    assert_eq!(lines(gfs.ok(&["ls", "/a/b/f"])), ["/a/b/f"]);

    // ls -l: type, size, chunks, mtime, path.
    let long = lines(gfs.ok(&["ls", "-l", "/a/b"]));
    let cols: Vec<Vec<&str>> = long
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(cols.len(), 3, "{long:?}");
    assert_eq!(
        cols[0][..3],
        ["-", &(CHUNK + 10).to_string()[..], "2"],
        "{long:?}"
    );
    assert_eq!(cols[0][4], "/a/b/big");
    assert_eq!(cols[1][..3], ["d", "-", "-"], "{long:?}");
    assert_eq!(cols[1][4], "/a/b/c");
    assert_eq!(cols[2][..3], ["-", "5", "1"], "{long:?}");
    assert!(
        cols[2][3].ends_with('Z') && cols[2][3].contains('T'),
        "{long:?}"
    );

    // ls --json: a list of entries.
    let v: serde_json::Value = serde_json::from_slice(&gfs.ok(&["ls", "--json", "/a/b"])).unwrap();
    let entries = v.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["path"], "/a/b/big");
    assert_eq!(entries[0]["type"], "file");
    assert_eq!(entries[0]["size"], (CHUNK + 10) as u64);
    assert_eq!(entries[0]["chunks"], 2);
    assert_eq!(entries[1]["path"], "/a/b/c");
    assert_eq!(entries[1]["type"], "dir");
    assert!(entries[1].get("size").is_none(), "{v}");
    assert_eq!(entries[2]["size"], 5);
    for e in entries {
        let mtime = e["mtime_ms"].as_u64().unwrap();
        assert!(mtime + 600_000 > now_ms, "{e}");
    }

    // stat --json of a file: every field, every chunk with its replicas.
    let st = gfs.stat("/a/b/big");
    assert_eq!(st["path"], "/a/b/big");
    assert_eq!(st["type"], "file");
    assert_eq!(st["size"], (CHUNK + 10) as u64);
    assert_eq!(st["replication"], 3);
    assert!(st["mtime_ms"].as_u64().unwrap() + 600_000 > now_ms);
    let chunks = st["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 2, "{st}");
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["index"], i as u64);
        assert!(c["handle"].as_u64().unwrap() > 0);
        assert!(c["version"].as_u64().unwrap() > 0);
        let replicas = c["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 3, "{st}");
        for r in replicas {
            assert!(r["id"].as_str().unwrap().starts_with("cs"), "{r}");
            assert!(
                r["data_addr"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{r}"
            );
        }
    }
    assert_eq!(chunks[0]["length"], CHUNK as u64);
    assert_eq!(chunks[0]["sealed"], true);
    assert_eq!(chunks[1]["length"], 10);
    assert_eq!(chunks[1]["sealed"], false);
    // ... and of a directory.
    let st = gfs.stat("/a/b/c");
    assert_eq!((&st["type"], &st["size"]), (&"dir".into(), &0.into()));
    assert_eq!(st["chunks"].as_array().map(Vec::len), Some(0));
    // The text form names the same things.
    let text = String::from_utf8(gfs.ok(&["stat", "/a/b/big"])).unwrap();
    assert!(text.contains("size:        1048586"), "{text}");
    assert!(text.contains("chunk 0: handle"), "{text}");

    // mv: renames; refuses an existing target; the source must exist.
    gfs.ok(&["mv", "/a/b/f", "/a/g"]);
    assert_eq!(gfs.ok(&["cat", "/a/g"]), b"hello");
    assert!(
        gfs.fails(&["stat", "/a/b/f"])
            .contains(": no such file or directory")
    );
    let err = gfs.fails(&["mv", "/a/g", "/a/b/big"]);
    assert!(err.contains(": already exists"), "{err}");
    assert_eq!(
        gfs.ok(&["cat", "/a/g"]),
        b"hello",
        "a refused mv moved the file"
    );
    assert!(
        gfs.fails(&["mv", "/nope", "/nope2"])
            .contains(": no such file or directory")
    );
    // A directory moves with everything beneath it.
    gfs.ok(&["mv", "/a/b", "/a/moved"]);
    assert_eq!(
        lines(gfs.ok(&["ls", "/a/moved"])),
        ["/a/moved/big", "/a/moved/c"]
    );

    // rm: a file; a non-empty directory only with -r; a missing path is an error.
    gfs.ok(&["rm", "/a/g"]);
    assert!(
        gfs.fails(&["rm", "/a/g"])
            .contains(": no such file or directory")
    );
    let err = gfs.fails(&["rm", "/a/moved"]);
    assert!(err.contains("not empty"), "{err}");
    gfs.ok(&["rm", "-r", "/a/moved"]);
    assert!(
        gfs.fails(&["ls", "/a/moved"])
            .contains(": no such file or directory")
    );
    assert!(
        gfs.fails(&["stat", "/a/moved/big"])
            .contains(": no such file or directory")
    );
    assert!(gfs.ok(&["ls", "/a"]).is_empty());
    gfs.ok(&["rm", "/a"]);
    assert!(gfs.ok(&["ls", "/"]).is_empty());
}

#[test]
fn errors_exit_1_with_one_line_and_usage_errors_exit_2() {
    let gfs = Gfs::start(3);

    // Not found, on every command that reads a path.
    for args in [
        &["stat", "/missing"][..],
        &["ls", "/missing"],
        &["cat", "/missing"],
        &["rm", "/missing"],
        &["stat", "--json", "/missing"],
    ] {
        let out = gfs.run(args);
        let err = out.error_line();
        assert!(
            err.contains(": no such file or directory"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.text());
    }

    // Bad paths.
    for bad in ["relative", "/a//b", "/a/../b", ""] {
        let err = gfs.fails(&["mkdir", bad]);
        assert!(err.starts_with("error: invalid path"), "{bad:?}: {err}");
        let err = gfs.fails(&["stat", bad]);
        assert!(err.starts_with("error: invalid path"), "{bad:?}: {err}");
    }
    let err = gfs
        .run_in(&["append", "relative"], b"x")
        .error_line()
        .to_string();
    assert!(err.starts_with("error: invalid path"), "{err}");

    // Operations that do not apply.
    gfs.ok(&["mkdir", "/d"]);
    gfs.put(b"x", "/d/f");
    assert!(
        gfs.fails(&["mkdir", "/d/f/sub"])
            .contains("not a directory")
    );
    assert!(gfs.fails(&["cat", "/d"]).starts_with("error: "));

    // Usage errors: clap's exit status 2, nothing on stdout.
    for args in [
        &[][..],
        &["frobnicate"],
        &["put", "only-one"],
        &["ls", "-z", "/"],
        &["mv", "/a"],
        &["stat"],
    ] {
        let out = gfs.run(args);
        assert_eq!(out.code, 2, "gfs {args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "gfs {args:?}: {out:?}");
    }
    // --help explains the flags, exit 0.
    let help = String::from_utf8(gfs.ok(&["put", "--help"])).unwrap();
    assert!(
        help.contains("--force") && help.contains("--master"),
        "{help}"
    );

    // The master unreachable: exit 1, one line naming the address.
    let out = run(
        std::process::Command::new(env!("CARGO_BIN_EXE_gfs"))
            .args(["--master", "127.0.0.1:1", "ls", "/"])
            .env_remove("GFS_MASTER"),
        None,
    );
    let err = out.error_line();
    assert!(
        err.contains("cannot reach the master at 127.0.0.1:1"),
        "{err}"
    );
}
