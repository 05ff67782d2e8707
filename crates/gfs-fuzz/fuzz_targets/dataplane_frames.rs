//! Bytes off the network into both data-plane decoders: each frame parses or is refused, a
//! parsed frame consumes bytes, and the buffer never grows past one frame's limit.
#![no_main]

use bytes::BytesMut;
use gfs_dataplane::{ClientCodec, HEADER_LEN, ServerCodec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const MAX: usize = 1 << 16;

fn drain<D: Decoder>(mut codec: D, data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match codec.decode(&mut buf) {
            Ok(Some(_)) => assert!(buf.len() < before, "a frame consumed nothing"),
            Ok(None) | Err(_) => break,
        }
    }
    assert!(buf.capacity() <= MAX + HEADER_LEN + data.len());
}

fuzz_target!(|data: &[u8]| {
    drain(ServerCodec::new(MAX), data);
    drain(ClientCodec::new(MAX), data);
});
