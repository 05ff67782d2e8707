//! A write-ahead log's bytes (a crash, a bad disk): the store's WAL reader lists the appends it
//! can parse and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gfs_storage::wal_appends(bytes::Bytes::copy_from_slice(data));
});
