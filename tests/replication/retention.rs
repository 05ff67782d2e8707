//! Op tables past their retention, against real processes: a retry on a chunk sealed longer
//! than `--op-retention` ago is told "outcome unknown", never ChunkFull (on which a client
//! would append it to the next chunk a second time), and a copy of such a chunk forgets too.

use std::time::{Duration, Instant};

use gfs_dataplane::{DataClient, DataError};
use gfs_proto::v1::{CloneChunkRequest, DeleteChunkRequest};

use gfs_dataplane::ChunkRef;
use gfs_testkit::fixture::{CHUNK, Cluster, append};

fn forgotten(r: &Result<u64, DataError>) -> bool {
    matches!(r, Err(DataError::OpRetentionExpired { .. }))
}

/// Retries op `op` at `c` until the answer is "outcome unknown"; every answer before must be
/// `before` (never ChunkFull).
async fn until_forgotten(c: &DataClient, h: u64, op: u64, data: &[u8], before: Result<u64, ()>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = append(c, &ChunkRef::untokened(h, 1), op, data).await;
        if forgotten(&r) {
            return;
        }
        match (&r, before) {
            (Ok(off), Ok(want)) if *off == want => {}
            (Err(DataError::ChunkFull { .. }), Err(())) => {}
            _ => panic!("op {op} before its table was dropped: {r:?}"),
        }
        assert!(Instant::now() < deadline, "the op table was never dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_past_the_op_retention_gets_outcome_unknown_and_a_copy_forgets_too() {
    let mut cluster = Cluster::start_with_args(3, &["--op-retention", "2s"]);
    let h = 21;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    assert_eq!(
        append(&c, &ChunkRef::untokened(h, 1), 1, b"first")
            .await
            .unwrap(),
        0
    );
    let big = vec![3u8; (CHUNK / 4) as usize];
    let mut op = 100;
    let length = loop {
        op += 1;
        match append(&c, &ChunkRef::untokened(h, 1), op, &big).await {
            Ok(_) => {}
            Err(DataError::ChunkFull { length, .. }) => break length,
            Err(e) => panic!("{e}"),
        }
    };
    // Within the retention: the retry gets its first offset, an op never sent ChunkFull.
    assert_eq!(
        append(&c, &ChunkRef::untokened(h, 1), 1, b"first")
            .await
            .unwrap(),
        0
    );
    assert!(matches!(
        append(&c, &ChunkRef::untokened(h, 1), 2, b"never sent").await,
        Err(DataError::ChunkFull { .. })
    ));
    // Past it: "outcome unknown", on the primary and on a secondary, for any op.
    until_forgotten(&c, h, 1, b"first", Ok(0)).await;
    assert!(forgotten(
        &append(&c, &ChunkRef::untokened(h, 1), 2, b"never sent").await
    ));
    let secondary = cluster.client(1).await;
    until_forgotten(&secondary, h, 1, b"first", Ok(0)).await;
    // A copy made now, from a replica that forgot: the same bytes, and no op table either
    // (its stand-in op ids would otherwise say "not here": ChunkFull).
    let mut target = gfs_bins::control_client(&cluster.servers[2].repl)
        .await
        .unwrap();
    target
        .delete_chunk(DeleteChunkRequest { handle: h })
        .await
        .unwrap();
    let copied = target
        .clone_chunk(CloneChunkRequest {
            handle: h,
            version: 1,
            source: cluster.servers[0].repl.clone(),
            sealed_length: Some(length),
            catch_up: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(copied.length, length);
    let copy = cluster.client(2).await;
    let mut at = 0;
    while at < length {
        let n = (CHUNK / 4).min(length - at) as u32;
        assert_eq!(
            copy.read(&ChunkRef::untokened(h, 1), at, n).await.unwrap(),
            c.read(&ChunkRef::untokened(h, 1), at, n).await.unwrap(),
            "the copy differs at {at}"
        );
        at += u64::from(n);
    }
    assert!(forgotten(
        &append(&copy, &ChunkRef::untokened(h, 1), 1, b"first").await
    ));
    assert!(forgotten(
        &append(&copy, &ChunkRef::untokened(h, 1), 2, b"never sent").await
    ));
    // Durably: restarted (with the default retention), it still does not know.
    cluster.servers[2].restart(&[]);
    let copy = cluster.client(2).await;
    assert!(forgotten(
        &append(&copy, &ChunkRef::untokened(h, 1), 1, b"first").await
    ));
    let info = cluster.report(2).await;
    assert!(
        info.chunks
            .iter()
            .any(|x| x.handle == h && x.sealed && x.committed_length == length)
    );
}
