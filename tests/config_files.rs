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

#[test]
fn the_master_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/master.toml");
    let cfg = gfs_master::MasterConfig::load(&path).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.chunk_size, gfs_util::Size::mib(64));
    assert_eq!(cfg.orphan_grace, std::time::Duration::from_secs(600));
}

#[test]
fn a_bad_master_config_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(&path, "leese = \"5s\"\n").unwrap();
    let e = gfs_master::MasterConfig::load(&path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("m.toml") && e.contains("leese"), "{e}");
}

#[test]
fn the_local_cluster_config_is_valid_and_built_in() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/local-cluster.toml");
    let cfg = gfs_bins::cluster::ClusterConfig::load(&path).unwrap();
    assert_eq!(cfg.chunkservers, 3);
    assert_eq!((cfg.master_port, cfg.chunkserver_port), (9000, 8080));
    assert_eq!(cfg.chunk_size, gfs_util::Size::mib(64));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        gfs_bins::cluster::BUILT_IN
    );
    // Every role's generated file is valid for the role itself.
    let master: gfs_master::MasterConfig = toml::from_str(&cfg.master_toml(1).unwrap()).unwrap();
    master.validate().unwrap();
    for n in 1..=cfg.chunkservers {
        let text = cfg.chunkserver_toml(n, "127.0.0.1:9000").unwrap();
        ChunkserverConfig::from_toml(&text, "generated")
            .unwrap()
            .validate()
            .unwrap();
    }
}

#[test]
fn a_bad_cluster_config_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[master]\nleese = \"5s\"\n").unwrap();
    let e = format!(
        "{:#}",
        gfs_bins::cluster::ClusterConfig::load(&path).unwrap_err()
    );
    assert!(e.contains("c.toml") && e.contains("leese"), "{e}");
}
