//! Orphan replicas: deleted after the grace period, real ones kept.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_replicas_are_deleted_after_the_grace_period_and_real_ones_stay() {
    use gfs_proto::v1::{CreateChunkRequest, ReportChunksRequest};

    let dir = tempfile::tempdir().unwrap();
    let (_master, servers, mut m) = cluster(
        dir.path(),
        &["--heartbeat-interval", "200ms", "--orphan-grace", "1s"],
        "/kept",
    )
    .await;
    let l = lease(&mut m, "/kept").await;
    // A replica the master never allocated (as a half-done allocation would leave).
    let mut ctl = gfs_bins::control_client(&servers[0].repl).await.unwrap();
    ctl.create_chunk(CreateChunkRequest {
        handle: 424_242,
        version: 1,
    })
    .await
    .unwrap();
    let handles = |r: gfs_proto::v1::ReportChunksReply| {
        r.chunks.into_iter().map(|c| c.handle).collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let have = handles(
            ctl.report_chunks(ReportChunksRequest::default())
                .await
                .unwrap()
                .into_inner(),
        );
        if !have.contains(&424_242) {
            assert!(
                have.contains(&l.handle),
                "the real chunk was deleted too: {have:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the orphan was never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the real chunk still works.
    let primary = primary_of(&l).await;
    append(&primary, &chunk_of(&l), 1, b"still here")
        .await
        .unwrap();
}
