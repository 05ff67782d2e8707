//! The master's metadata directory holding one log segment of any bytes: recovery opens it or
//! refuses with an error; what it opens serves reads.
#![no_main]

use gfs_master::{MetaConfig, MetaStore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(format!("log-{:020}", 1)), data).unwrap();
    if let Ok(store) = MetaStore::open(dir.path(), MetaConfig::default()) {
        let rt = tokio_rt();
        rt.block_on(async {
            let _ = store.read(|ns| ns.list("/").map(|l| l.len())).await;
        });
    }
});

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}
