//! Malformed, truncated and oversized frames against a real chunkserver.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use gfs_dataplane::ChunkRef;
use gfs_testkit::fixture::{CHUNK, Cluster, append};

async fn reply_then_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("the server did not close the connection")
        .expect("read");
    buf
}

#[tokio::test]
async fn bad_frames_get_an_error_and_the_server_keeps_serving() {
    let cluster = Cluster::start(3, |_| vec![]);
    let h = 21;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let addr = cluster.servers[0].data.clone();

    // Garbage.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let reply = reply_then_close(&mut s).await;
    assert!(
        reply.len() >= 16 && reply[3] == 0xFF,
        "no error frame: {reply:?}"
    );

    // Oversized: an APPEND announcing more than a record may carry.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut f = vec![b'G', b'F', gfs_dataplane::VERSION, 0x01];
    f.extend_from_slice(&77u64.to_le_bytes());
    f.extend_from_slice(&((CHUNK as u32) * 2).to_le_bytes());
    s.write_all(&f).await.unwrap();
    let reply = reply_then_close(&mut s).await;
    assert!(
        reply.len() >= 18 && reply[3] == 0xFF,
        "no error frame: {reply:?}"
    );
    assert_eq!(
        u64::from_le_bytes(reply[4..12].try_into().unwrap()),
        77,
        "wrong request id"
    );
    assert_eq!(
        u16::from_le_bytes([reply[16], reply[17]]),
        2,
        "not FrameTooLarge"
    );

    // Truncated: a header promising a body that never comes, then the socket closes.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut f = vec![b'G', b'F', gfs_dataplane::VERSION, 0x01];
    f.extend_from_slice(&78u64.to_le_bytes());
    f.extend_from_slice(&100u32.to_le_bytes());
    f.extend_from_slice(&[0u8; 10]);
    s.write_all(&f).await.unwrap();
    drop(s);

    // Everyone else is still served.
    let c = cluster.client(0).await;
    assert_eq!(
        append(&c, &ChunkRef::untokened(h, 1), 1, b"still here")
            .await
            .unwrap(),
        0
    );
}

/// Finding 7: a READ's length is checked before anything is read or allocated. A READ of
/// u32::MAX bytes of a chunk whose replica has a flipped byte is refused as FrameTooLarge
/// (before, the server read and verified the whole chunk first, and answered
/// ChecksumMismatch), 64 of them pipelined on one connection, and the server keeps serving.
#[tokio::test]
async fn a_read_longer_than_a_frame_is_refused_before_reading() {
    let cluster = Cluster::start(3, |_| vec![]);
    let h = 22;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    let quarter = vec![5u8; CHUNK as usize / 4 - 100];
    for op in 1..=3 {
        append(&c, &ChunkRef::untokened(h, 1), op, &quarter)
            .await
            .unwrap();
    }
    cluster.wait_committed(1, h, 3 * quarter.len() as u64).await;
    // Damage server 1's replica on disk: any read that touches it fails its checksums.
    let file = cluster.servers[1].dir.join(h.to_string());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 0x10;
    std::fs::write(&file, bytes).unwrap();
    let c1 = cluster.client(1).await;
    let whole = ChunkRef::untokened(h, 1);
    let reads = (0..64).map(|_| c1.read(&whole, 0, u32::MAX));
    for r in futures::future::join_all(reads).await {
        assert!(
            matches!(r, Err(gfs_dataplane::DataError::FrameTooLarge { .. })),
            "{r:?}"
        );
    }
    // Within the limit it still serves (here: finds the damage).
    let r = c1.read(&ChunkRef::untokened(h, 1), 0, 4096).await;
    assert!(
        matches!(r, Err(gfs_dataplane::DataError::ChecksumMismatch { .. })),
        "{r:?}"
    );
    let good = cluster
        .client(2)
        .await
        .read(&ChunkRef::untokened(h, 1), 0, 4096)
        .await
        .unwrap();
    assert_eq!(good.len(), 4096);
}
