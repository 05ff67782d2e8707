//! Appends on a healthy three-replica chunk.

use std::collections::BTreeMap;

use gfs_dataplane::DataError;

use gfs_dataplane::ChunkRef;
use gfs_testkit::fixture::{CHUNK, Cluster, append, record};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_distinct_offsets_and_identical_replicas() {
    let cluster = Cluster::start(3, |_| vec![]);
    let h = 7;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let c = cluster.client(0).await;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..5u64 {
                let data = record(w, i);
                let off = append(&c, &ChunkRef::untokened(h, 1), (w << 32) | i, &data)
                    .await
                    .unwrap();
                out.push((off, data));
            }
            out
        }));
    }
    let mut placed = BTreeMap::new();
    for t in tasks {
        for (off, data) in t.await.unwrap() {
            assert!(
                placed.insert(off, data).is_none(),
                "offset {off} given twice"
            );
        }
    }
    let mut end = 0;
    for (off, data) in &placed {
        assert_eq!(*off, end, "records overlap or leave a hole");
        end += data.len() as u64;
    }
    for i in 0..3 {
        cluster.wait_committed(i, h, end).await;
        let c = cluster.client(i).await;
        for (off, data) in &placed {
            let got = c
                .read(&ChunkRef::untokened(h, 1), *off, data.len() as u32)
                .await
                .unwrap();
            assert_eq!(&got[..], &data[..], "replica {i} differs at {off}");
        }
    }
}

#[tokio::test]
async fn a_retry_with_the_same_op_id_returns_the_first_offset() {
    let cluster = Cluster::start(3, |_| vec![]);
    let h = 8;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    let first = append(&c, &ChunkRef::untokened(h, 1), 100, b"once")
        .await
        .unwrap();
    let other = append(&c, &ChunkRef::untokened(h, 1), 101, b"other")
        .await
        .unwrap();
    // The reply was "lost": the client sends the same op again.
    let again = append(&c, &ChunkRef::untokened(h, 1), 100, b"once")
        .await
        .unwrap();
    assert_eq!((first, other, again), (0, 4, 0));
    // The same op id with another record (a collision, or a client bug) is refused, not
    // acknowledged at the first record's offset.
    let clash = append(&c, &ChunkRef::untokened(h, 1), 100, b"not the same").await;
    assert!(
        matches!(clash, Err(gfs_dataplane::DataError::BadRequest(ref m)) if m.contains("op")),
        "{clash:?}"
    );
    for i in 0..3 {
        cluster.wait_committed(i, h, 9).await;
    }
    assert_eq!(
        &cluster
            .client(2)
            .await
            .read(&ChunkRef::untokened(h, 1), 0, 100)
            .await
            .unwrap()[..],
        b"onceother"
    );
}

#[tokio::test]
async fn appends_past_the_end_seal_the_chunk_on_every_replica() {
    let cluster = Cluster::start(3, |_| vec![]);
    let h = 9;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    let big = vec![5u8; (CHUNK / 4) as usize];
    let mut end = 0;
    let mut op = 0;
    let length = loop {
        op += 1;
        match append(&c, &ChunkRef::untokened(h, 1), op, &big).await {
            Ok(off) => {
                assert_eq!(off, end);
                end += big.len() as u64;
            }
            Err(DataError::ChunkFull { length, .. }) => break length,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(length, end);
    assert_eq!(end, CHUNK, "four quarter-chunk records fill it");
    for i in 0..3 {
        cluster.wait_committed(i, h, end).await;
        let info = cluster.report(i).await;
        assert!(
            info.chunks.iter().any(|x| x.handle == h && x.sealed),
            "replica {i} not sealed"
        );
    }
    // Too large for any chunk: refused outright.
    let huge = vec![1u8; (CHUNK / 4) as usize + 1];
    assert!(matches!(
        c.append(&ChunkRef::untokened(h, 1), 999, huge.into()).await,
        Err(DataError::FrameTooLarge { .. })
    ));
}

#[tokio::test]
async fn gfs_tester_passes_against_three_processes() {
    let cluster = Cluster::start(3, |_| vec![]);
    let servers = cluster
        .servers
        .iter()
        .map(|s| {
            let (p, r) = s.ports();
            format!("127.0.0.1:{p}:{r}")
        })
        .collect::<Vec<_>>()
        .join(",");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gfs-tester"))
        .args([
            "--servers",
            &servers,
            // At most 30 x 30,000 bytes: always inside one 1 MiB test chunk.
            "--records",
            "30",
            "--max-record",
            "30000",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gfs-tester failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("gfs-tester: OK"), "{stdout}");
}
