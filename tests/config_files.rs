//! Every file in `config/` parses and validates.

#![allow(clippy::unwrap_used)]

use gfs_chunkserver::ChunkserverConfig;

#[test]
fn every_config_file_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("chunkserver") && name.ends_with(".toml") {
            let cfg = ChunkserverConfig::load(&path).unwrap();
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "expected config/chunkserver*.toml files, found {seen}"
    );
}
