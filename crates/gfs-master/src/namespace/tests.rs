//! Unit tests of the namespace.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::record::{AddChunkOp, CreateOp, DeleteOp, PathOp, RenameOp};

fn mkdir(p: &str) -> Op {
    Op::Mkdir(PathOp {
        path: p.into(),
        mtime_ms: 1,
    })
}
fn create(p: &str) -> Op {
    Op::Create(CreateOp {
        path: p.into(),
        mtime_ms: 2,
        replication: 3,
    })
}
fn delete(p: &str) -> Op {
    Op::Delete(DeleteOp {
        path: p.into(),
        mtime_ms: 3,
        recursive: true,
    })
}
fn rename(a: &str, b: &str) -> Op {
    Op::Rename(RenameOp {
        src: a.into(),
        dst: b.into(),
        mtime_ms: 4,
    })
}
/// Chunk `handle` of `path` at `version`, its first lease to `primary` ("": none), placed
/// on three servers.
fn new_chunk(path: &str, handle: u64, version: u64, primary: &str) -> AddChunkOp {
    AddChunkOp {
        path: path.into(),
        handle,
        version,
        primary: primary.into(),
        uncreated: Vec::new(),
        placed: 3,
    }
}
fn names(v: Vec<Stat>) -> Vec<String> {
    v.into_iter().map(|s| s.path).collect()
}

#[test]
fn the_gogfs_graybox_cases() {
    let mut ns = Namespace::new();
    ns.apply(&mkdir("/dir1")).unwrap();
    ns.apply(&mkdir("/dir2")).unwrap();
    ns.apply(&create("/file1.txt")).unwrap();
    ns.apply(&create("/file2.txt")).unwrap();
    ns.apply(&create("/dir1/file3.txt")).unwrap();
    // create twice fails
    assert!(matches!(
        ns.apply(&create("/file1.txt")),
        Err(MasterError::AlreadyExists(_))
    ));
    assert!(matches!(
        ns.apply(&mkdir("/dir1")),
        Err(MasterError::AlreadyExists(_))
    ));
    // list contents, in name order, direct children only
    assert_eq!(
        names(ns.list("/").unwrap()),
        ["/dir1", "/dir2", "/file1.txt", "/file2.txt"]
    );
    assert_eq!(names(ns.list("/dir1").unwrap()), ["/dir1/file3.txt"]);
    // a missing parent, a file as a parent
    assert!(matches!(
        ns.apply(&create("/nope/x")),
        Err(MasterError::NotFound(_))
    ));
    assert!(matches!(
        ns.apply(&create("/file1.txt/x")),
        Err(MasterError::NotADirectory(_))
    ));
    // rename: a file, then a directory with its contents; never over an existing entry
    ns.apply(&rename("/file2.txt", "/dir2/moved.txt")).unwrap();
    assert!(matches!(
        ns.apply(&rename("/dir1", "/dir2/moved.txt")),
        Err(MasterError::AlreadyExists(_))
    ));
    assert!(matches!(
        ns.apply(&rename("/dir1", "/dir1/sub")),
        Err(MasterError::RenameIntoSelf { .. })
    ));
    ns.apply(&rename("/dir1", "/dir3")).unwrap();
    assert_eq!(names(ns.list("/dir3").unwrap()), ["/dir3/file3.txt"]);
    assert!(matches!(
        ns.stat("/dir1/file3.txt"),
        Err(MasterError::NotFound(_))
    ));
    // delete: a file, then a directory with everything under it
    ns.apply(&Op::AddChunk(new_chunk("/dir3/file3.txt", 9, 1, "")))
        .unwrap();
    ns.apply(&delete("/file1.txt")).unwrap();
    let shallow = Op::Delete(DeleteOp {
        path: "/dir3".into(),
        mtime_ms: 3,
        recursive: false,
    });
    assert!(matches!(
        ns.apply(&shallow),
        Err(MasterError::DirectoryNotEmpty(_))
    ));
    assert_eq!(ns.apply(&delete("/dir3")).unwrap(), vec![9]);
    assert_eq!(ns.chunk(9), None);
    assert_eq!(names(ns.list("/").unwrap()), ["/dir2"]);
    assert!(matches!(
        ns.apply(&delete("/dir3")),
        Err(MasterError::NotFound(_))
    ));
}

#[test]
fn a_sibling_with_a_common_prefix_is_not_inside() {
    let mut ns = Namespace::new();
    ns.apply(&mkdir("/a")).unwrap();
    ns.apply(&mkdir("/a/b")).unwrap();
    ns.apply(&mkdir("/ab")).unwrap();
    ns.apply(&rename("/a", "/z")).unwrap();
    assert_eq!(names(ns.list("/").unwrap()), ["/ab", "/z"]);
    ns.apply(&delete("/z")).unwrap();
    assert_eq!(names(ns.list("/").unwrap()), ["/ab"]);
}

#[test]
fn checkpoints_round_trip() {
    let mut ns = Namespace::new();
    ns.apply(&mkdir("/d")).unwrap();
    ns.apply(&create("/d/f")).unwrap();
    for h in 1..=3 {
        ns.apply(&Op::AddChunk(new_chunk("/d/f", h, h, "")))
            .unwrap();
    }
    ns.apply(&Op::Seal(crate::record::SealOp {
        handle: 1,
        length: 77,
    }))
    .unwrap();
    let back = Namespace::from_checkpoint(ns.to_checkpoint(5));
    assert_eq!(back.list("/d").unwrap(), ns.list("/d").unwrap());
    assert_eq!(back.chunks_of("/d/f").unwrap(), &[1, 2, 3]);
    assert_eq!(back.chunk(1).unwrap().sealed_length, Some(77));
    assert_eq!(back.chunk(3).unwrap().version, 3);
}

/// Issue 12, part 3: the log names the server each lease went to (AddChunk for a chunk's
/// first lease, SetVersion for every bump); a version adopted from a report names none;
/// the checkpoint keeps it all.
#[test]
fn the_last_primary_of_each_chunk_is_recorded_and_checkpointed() {
    use crate::record::SetVersionOp;
    let mut ns = Namespace::new();
    ns.apply(&create("/f")).unwrap();
    for (h, p) in [(1, "cs1"), (2, "cs2"), (3, "")] {
        ns.apply(&Op::AddChunk(new_chunk("/f", h, 1, p))).unwrap();
    }
    assert_eq!(ns.last_primary(1), Some("cs1"));
    assert_eq!(ns.last_primary(3), None);
    let bump = |h: u64, version: u64, p: &str| {
        Op::SetVersion(SetVersionOp {
            handle: h,
            version,
            primary: p.into(),
        })
    };
    ns.apply(&bump(1, 2, "cs2")).unwrap();
    ns.apply(&bump(3, 2, "cs1")).unwrap();
    // A version adopted from a report: no lease was granted at it.
    ns.apply(&bump(2, 2, "")).unwrap();
    assert_eq!(ns.last_primary(1), Some("cs2"));
    assert_eq!(ns.last_primary(2), None);
    assert_eq!(ns.last_primary(3), Some("cs1"));
    // Two servers, interned once each.
    assert_eq!(ns.servers.len(), 2);
    let back = Namespace::from_checkpoint(ns.to_checkpoint(9));
    for h in 1..=3 {
        assert_eq!(back.chunk(h), ns.chunk(h));
        assert_eq!(back.last_primary(h), ns.last_primary(h));
    }
}

/// The version of a chunk's last lease is known from the log through the unleased versions
/// fences and adopted reports log after it, and through checkpoints (seed 148412570704814 of
/// the simulator); unknown for a chunk created with no lease, too far past it, or read from
/// an older checkpoint. It costs no memory: it fits in `ChunkMeta`'s padding.
#[test]
fn the_last_lease_s_version_outlives_unleased_versions_and_checkpoints() {
    use crate::record::SetVersionOp;
    /// Logs version `version` of chunk `h`, leased to `p` ("": no lease); its last lease's
    /// version after.
    fn bump(ns: &mut Namespace, h: u64, version: u64, p: &str) -> Option<u64> {
        ns.apply(&Op::SetVersion(SetVersionOp {
            handle: h,
            version,
            primary: p.into(),
        }))
        .unwrap();
        ns.chunk(h).unwrap().last_leased()
    }
    assert_eq!(std::mem::size_of::<ChunkMeta>(), 32);
    let mut ns = Namespace::new();
    ns.apply(&create("/f")).unwrap();
    for (h, p) in [(1, "cs1"), (2, "")] {
        ns.apply(&Op::AddChunk(new_chunk("/f", h, 1, p))).unwrap();
    }
    assert_eq!(bump(&mut ns, 1, 2, ""), Some(1));
    assert_eq!(
        bump(&mut ns, 1, 5, ""),
        Some(1),
        "a version adopted from a report"
    );
    assert_eq!(bump(&mut ns, 2, 2, ""), None);
    let back = Namespace::from_checkpoint(ns.to_checkpoint(4));
    assert_eq!(back.chunk(1).unwrap().last_leased(), Some(1));
    assert_eq!(back.chunk(1), ns.chunk(1));
    assert_eq!(bump(&mut ns, 1, 6, "cs2"), Some(6));
    assert_eq!(bump(&mut ns, 1, 7, ""), Some(6));
    assert_eq!(bump(&mut ns, 2, 3, "cs1"), Some(3));
    assert_eq!(
        bump(&mut ns, 2, 3 + u64::from(u16::MAX), ""),
        None,
        "too far past it"
    );
    assert_eq!(bump(&mut ns, 2, 4 + u64::from(u16::MAX), ""), None);
    let mut older = ns.to_checkpoint(9);
    older.entries[0].chunks[0].since_lease = 0;
    let back = Namespace::from_checkpoint(older);
    assert_eq!(back.chunk(1).unwrap().last_leased(), None);
    assert_eq!(back.chunk(1).unwrap().version, 7);
}

/// A file created with its first chunk in one record is the file and the chunk both, or,
/// refused, neither: the name taken, no parent, the handle taken, the chunk named for another
/// path, or a part missing. A checkpoint keeps it as any file.
#[test]
fn a_file_created_with_its_first_chunk_is_both_or_neither() {
    use crate::record::CreateWithChunkOp;
    let with_chunk = |path: &str, handle: u64, of: &str| {
        let Op::Create(c) = create(path) else {
            unreachable!()
        };
        Op::CreateWithChunk(CreateWithChunkOp {
            create: Some(c),
            chunk: Some(new_chunk(of, handle, 1, "cs1")),
        })
    };
    let mut ns = Namespace::new();
    ns.apply(&mkdir("/d")).unwrap();
    ns.apply(&with_chunk("/d/f", 5, "/d/f")).unwrap();
    assert_eq!(ns.chunks_of("/d/f").unwrap(), &[5]);
    let meta = ns.chunk(5).unwrap();
    assert_eq!((meta.version, meta.last_leased()), (1, Some(1)));
    assert_eq!(ns.last_primary(5), Some("cs1"));
    let refused = [
        with_chunk("/d/f", 6, "/d/f"),
        with_chunk("/e/f", 6, "/e/f"),
        with_chunk("/d/g", 5, "/d/g"),
        with_chunk("/d/g", 6, "/d/f"),
        Op::CreateWithChunk(CreateWithChunkOp {
            create: None,
            chunk: None,
        }),
    ];
    for op in &refused {
        assert!(ns.apply(op).is_err(), "{op:?}");
    }
    assert_eq!(names(ns.list("/d").unwrap()), ["/d/f"]);
    assert!(ns.chunk(6).is_none());
    let back = Namespace::from_checkpoint(ns.to_checkpoint(2));
    assert_eq!(back.chunks_of("/d/f").unwrap(), &[5]);
    assert_eq!(back.chunk(5), ns.chunk(5));
}

/// Logs and checkpoints written before primaries were recorded read back with every
/// primary unknown; an index past the checkpoint's table is unknown too.
#[test]
fn records_and_checkpoints_of_older_versions_name_no_primary() {
    use prost::Message;

    /// `AddChunkOp` as older versions wrote it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct OldAddChunk {
        #[prost(string, tag = "1")]
        path: String,
        #[prost(uint64, tag = "2")]
        handle: u64,
        #[prost(uint64, tag = "3")]
        version: u64,
    }
    let old = OldAddChunk {
        path: "/f".into(),
        handle: 5,
        version: 4,
    }
    .encode_to_vec();
    let a = AddChunkOp::decode(&old[..]).unwrap();
    assert_eq!((a.handle, a.version, a.primary.as_str()), (5, 4, ""));
    let mut ns = Namespace::new();
    ns.apply(&create("/f")).unwrap();
    ns.apply(&Op::AddChunk(a)).unwrap();
    assert_eq!(ns.chunk(5).unwrap().primary, 0);
    assert_eq!(ns.last_primary(5), None);
    let mut c = ns.to_checkpoint(3);
    assert!(c.servers.is_empty());
    c.entries[0].chunks[0].primary = 7;
    assert_eq!(Namespace::from_checkpoint(c).last_primary(5), None);
}

/// The servers a chunk's creation failed on, with their data directories (`AddChunkOp::
/// uncreated`), are kept until the chunk is sealed or deleted, through a checkpoint; an
/// unknown directory (0) is not kept.
#[test]
fn failed_creations_are_kept_until_the_seal_through_a_checkpoint() {
    use crate::record::{SealOp, Uncreated};
    let mut ns = Namespace::new();
    ns.apply(&create("/f")).unwrap();
    ns.apply(&create("/g")).unwrap();
    let on = |server: &str, disk_id: u64| Uncreated {
        server: server.into(),
        disk_id,
    };
    for (path, h) in [("/f", 1), ("/f", 2), ("/g", 3)] {
        ns.apply(&Op::AddChunk(AddChunkOp {
            path: path.into(),
            handle: h,
            version: 1,
            primary: "cs1".into(),
            uncreated: vec![on("cs2", 7), on("cs3", 0)],
            placed: 3,
        }))
        .unwrap();
    }
    assert_eq!(ns.uncreated_on("cs2", 7), [1, 2, 3]);
    assert!(ns.uncreated_on("cs2", 8).is_empty(), "another disk");
    assert!(ns.uncreated_on("cs3", 0).is_empty(), "an unknown disk");
    ns.apply(&Op::Seal(SealOp {
        handle: 1,
        length: 0,
    }))
    .unwrap();
    ns.apply(&Op::Delete(DeleteOp {
        path: "/g".into(),
        mtime_ms: 0,
        recursive: false,
    }))
    .unwrap();
    assert_eq!(ns.uncreated_on("cs2", 7), [2]);
    let back = Namespace::from_checkpoint(ns.to_checkpoint(9));
    assert_eq!(back.uncreated_on("cs2", 7), [2]);
    // How many servers a chunk was placed on goes through the checkpoint too.
    assert_eq!(back.chunk(2).map(|m| m.placed), Some(3));
}
