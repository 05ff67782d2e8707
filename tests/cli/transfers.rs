//! put / get / cat round trips, byte for byte, around chunk boundaries.

use crate::env::{CHUNK, Gfs, assert_same, exists, random_bytes, run};

#[test]
fn put_and_get_round_trip_at_every_size_around_a_chunk() {
    let gfs = Gfs::start(3);
    let data = random_bytes(CHUNK * 7 / 2, "round trips");
    for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK * 7 / 2] {
        let remote = format!("/sizes/f{len}");
        gfs.ok(&["mkdir", "-p", "/sizes"]);
        gfs.put(&data[..len], &remote);
        assert_same(&gfs.get(&remote), &data[..len], &remote);
        let st = gfs.stat(&remote);
        assert_eq!(st["size"], len as u64, "{st}");
        assert_eq!(
            st["chunks"].as_array().unwrap().len(),
            len.div_ceil(CHUNK),
            "{remote}: {st}"
        );
        // No .part file is left beside what get wrote.
        assert!(!exists(
            &gfs.local(&format!("get-{}.part", remote.replace('/', "_")))
        ));
    }
}

#[test]
fn put_from_stdin_get_to_stdout_and_cat() {
    let gfs = Gfs::start(3);
    let data = random_bytes(CHUNK + 12_345, "stdin/stdout");
    let out = gfs.run_in(&["put", "-", "/from-stdin"], &data);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "put printed on stdout: {:?}",
        out.text()
    );
    assert!(
        out.stderr.is_empty(),
        "put printed on stderr (not a terminal): {:?}",
        out.stderr
    );
    let out = gfs.run(&["get", "/from-stdin", "-"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "get -: {:?}", out.stderr);
    assert_same(&out.stdout, &data, "get -");
    assert_same(&gfs.ok(&["cat", "/from-stdin"]), &data, "cat");

    // A small text file through cat; an empty one cats to nothing.
    gfs.put(b"hello, gfs\n", "/hello");
    assert_eq!(gfs.ok(&["cat", "/hello"]), b"hello, gfs\n");
    gfs.put(b"", "/empty");
    assert_eq!(gfs.ok(&["cat", "/empty"]), b"");

    // get into an existing directory names the file after the remote one.
    let dir = gfs.local("into");
    std::fs::create_dir(&dir).unwrap();
    gfs.ok(&["get", "/hello", dir.to_str().unwrap()]);
    assert_eq!(std::fs::read(dir.join("hello")).unwrap(), b"hello, gfs\n");

    // GFS_MASTER stands in for --master.
    let out = run(
        std::process::Command::new(env!("CARGO_BIN_EXE_gfs"))
            .args(["cat", "/hello"])
            .env("GFS_MASTER", &gfs.master.addr),
        None,
    );
    assert_eq!((out.code, &out.stdout[..]), (0, &b"hello, gfs\n"[..]));

    // A pipe on cat's stdout is widened to 1 MiB (where the system allows it): its reader
    // wakes once per megabyte, not once per 64 KiB.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gfs"))
        .args(["--master", &gfs.master.addr, "cat", "/hello"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let pipe = child.stdout.take().unwrap();
    let size = rustix::pipe::fcntl_getpipe_size(&pipe).unwrap();
    let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if max >= 1 << 20 {
        assert_eq!(size, 1 << 20, "the pipe on gfs cat's stdout");
    }
}

#[test]
fn put_refuses_an_existing_target_unless_forced() {
    let gfs = Gfs::start(3);
    gfs.put(b"first", "/p");
    let local = gfs.local("second");
    std::fs::write(&local, b"second version").unwrap();
    let err = gfs.fails(&["put", local.to_str().unwrap(), "/p"]);
    assert_eq!(err, "error: already exists: /p");
    assert_eq!(
        gfs.ok(&["cat", "/p"]),
        b"first",
        "a refused put changed the file"
    );
    gfs.ok(&["put", "-f", local.to_str().unwrap(), "/p"]);
    assert_eq!(gfs.ok(&["cat", "/p"]), b"second version");
    // -f onto a path that does not exist is a plain put.
    gfs.ok(&["put", "-f", local.to_str().unwrap(), "/q"]);
    assert_eq!(gfs.ok(&["cat", "/q"]), b"second version");
    // A missing local file fails before anything is created remotely.
    let err = gfs.fails(&["put", "/definitely/not/here", "/r"]);
    assert!(err.contains("/definitely/not/here"), "{err}");
    assert!(
        gfs.fails(&["stat", "/r"])
            .contains(": no such file or directory")
    );
}

#[test]
fn get_of_a_missing_file_leaves_nothing_behind() {
    let gfs = Gfs::start(3);
    let local = gfs.local("missing");
    let err = gfs.fails(&["get", "/missing", local.to_str().unwrap()]);
    assert!(err.contains(": no such file or directory"), "{err}");
    assert!(!exists(&local));
    assert!(!exists(&gfs.local("missing.part")));
    let out = gfs.run(&["cat", "/missing"]);
    assert!(out.error_line().contains(": no such file or directory"));
    assert!(out.stdout.is_empty());
}

#[test]
fn put_and_append_create_missing_parent_directories() {
    let gfs = Gfs::start(3);
    // As HDFS's create does: `echo x | gfs append /logs/app` works when /logs does not exist.
    let out = gfs.run_in(&["append", "/logs/app"], b"x\n");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.text(), "0\n");
    assert_eq!(gfs.stat("/logs")["type"], "dir");
    assert_eq!(gfs.ok(&["cat", "/logs/app"]), b"x\n");
    // The next append finds it there.
    assert_eq!(gfs.run_in(&["append", "/logs/app"], b"y\n").text(), "2\n");

    gfs.put(b"deep", "/a/b/c/f");
    assert_eq!(gfs.ok(&["cat", "/a/b/c/f"]), b"deep");
    assert_eq!(gfs.ok(&["ls", "/a/b"]), b"/a/b/c\n");
    assert_eq!(gfs.stat("/a/b/c")["type"], "dir");

    // A file where a directory should be is an error, for both; nothing is created.
    let local = gfs.local("in");
    std::fs::write(&local, b"z").unwrap();
    let e = gfs.fails(&["put", local.to_str().unwrap(), "/logs/app/x/f"]);
    assert!(e.contains("not a directory"), "{e}");
    let out = gfs.run_in(&["append", "/a/b/c/f/g"], b"z");
    assert!(out.error_line().contains("not a directory"), "{out:?}");
    assert_eq!(gfs.ok(&["ls", "/logs"]), b"/logs/app\n");
    assert_eq!(gfs.ok(&["cat", "/logs/app"]), b"x\ny\n");
}
