//! An invariant checked while the run goes on, not only at its end: every acknowledged record
//! is whole in the durable bytes (what a power cut now would keep) of chunk files on at least
//! a quorum of chunkservers (I2: an append is acknowledged only once a quorum fsynced it, and
//! no replica holding it is deleted before a quorum of current ones hold it). The end checker
//! sees the cluster after healing, when re-replication has long hidden a moment with one copy
//! (finding 4 of the replication review: a relegation that left an acknowledged append on its
//! primary alone).
//!
//! A file is parsed again only when its bytes change. A bit the nemesis flipped breaks the
//! record it lands in on that one replica: the file is parsed with the byte put back (seed 167:
//! a flip in a record a replica had just replayed from its log).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gfs_testkit::record::{HEADER, MAGIC, RecordId, parse_record};
use gfs_util::disk::sim::SimDisk;

use crate::cluster::{SERVERS, data_dir};
use crate::nemesis::Flip;

/// Servers that must hold an acknowledged record.
const QUORUM: usize = 2;

/// The records of one file as last parsed (each with the chunk it belongs to), and the stamp
/// of the bytes parsed.
struct Parsed {
    stamp: (u64, u64),
    ids: BTreeSet<(RecordId, u64)>,
}

/// A parse of the durable bytes of each file, kept between checks.
#[derive(Default)]
struct Files(BTreeMap<(&'static str, PathBuf), Parsed>);

impl Files {
    /// The records of `path` on `server` now, parsed again only when `stamp` moved.
    fn update(
        &mut self,
        server: &'static str,
        path: &Path,
        stamp: (u64, u64),
        parse: impl FnOnce() -> Option<BTreeSet<(RecordId, u64)>>,
    ) {
        let key = (server, path.to_path_buf());
        if self.0.get(&key).is_some_and(|p| p.stamp == stamp) {
            return;
        }
        let ids = parse().unwrap_or_default();
        self.0.insert(key, Parsed { stamp, ids });
    }

    /// Forgets files not in `present`.
    fn retain(&mut self, present: &BTreeSet<(&'static str, PathBuf)>) {
        self.0.retain(|key, _| present.contains(key));
    }

    /// The records (with their chunks) in the files of `server`.
    fn of<'a>(&'a self, server: &'a str) -> impl Iterator<Item = (RecordId, u64)> + 'a {
        self.0
            .iter()
            .filter(move |((s, _), _)| *s == server)
            .flat_map(|(_, p)| p.ids.iter().copied())
    }
}

/// The chunks one write-ahead log creates and does not delete after, and the stamp of the
/// bytes parsed.
struct Created {
    stamp: (u64, u64),
    handles: BTreeSet<u64>,
}

/// What each chunkserver's disk holds, kept between checks.
#[derive(Default)]
pub struct Durability {
    /// Chunk files.
    chunks: Files,
    /// The store's write-ahead logs.
    logs: Files,
    /// The chunks each write-ahead log creates and does not delete after.
    created: BTreeMap<(&'static str, PathBuf), Created>,
    /// Records already reported (each once).
    reported: BTreeSet<RecordId>,
}

impl Durability {
    /// Checks every record of `acked` against the disks now, at simulated time `at`; returns
    /// one line per record newly found on fewer than a quorum of servers. A server holds a
    /// record when a chunk file holds it durably, or its write-ahead log does (small appends
    /// reach the chunk file at the next checkpoint, or at the replay after a crash) while the
    /// chunk's file is still there or the log creates the chunk (a replay makes its file
    /// again: a creation does not wait for its directory entry to be durable); a deleted
    /// replica's appends still in the log do not count.
    pub fn check(
        &mut self,
        disks: &BTreeMap<String, SimDisk>,
        acked: &[(RecordId, u64)],
        flips: &[Flip],
        at: Duration,
    ) -> Vec<String> {
        let dir = data_dir();
        let mut present: BTreeSet<(&'static str, PathBuf)> = BTreeSet::new();
        for server in SERVERS {
            let disk = &disks[server];
            for path in disk.files() {
                if path.parent() != Some(dir.as_path()) {
                    continue;
                }
                let chunk = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<u64>().ok());
                let flipped: Vec<&Flip> = flips
                    .iter()
                    .filter(|f| f.server == server && f.path == path)
                    .filter(|f| disk.still_flipped(&path, f.offset))
                    .collect();
                if let Some(stamp) = disk.durable_stamp(&path) {
                    match chunk {
                        Some(handle) => self.chunks.update(server, &path, stamp, || {
                            disk.with_durable(&path, |b| {
                                unflipped(b, &flipped)
                                    .into_iter()
                                    .map(|id| (id, handle))
                                    .collect()
                            })
                        }),
                        None => {
                            self.logs
                                .update(server, &path, stamp, || disk.with_durable(&path, logged));
                            let key = (server, path.clone());
                            if self.created.get(&key).is_none_or(|c| c.stamp != stamp) {
                                let handles = disk
                                    .with_durable(&path, |b| {
                                        gfs_storage::wal_created(bytes::Bytes::copy_from_slice(b))
                                            .into_iter()
                                            .map(|h| h.0)
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                self.created.insert(key, Created { stamp, handles });
                            }
                        }
                    }
                }
                present.insert((server, path));
            }
        }
        for files in [&mut self.chunks, &mut self.logs] {
            files.retain(&present);
        }
        self.created.retain(|key, _| present.contains(key));
        let mut on: BTreeMap<RecordId, BTreeSet<&'static str>> = BTreeMap::new();
        let mut chunk_of: BTreeMap<RecordId, u64> = BTreeMap::new();
        for server in SERVERS {
            let created = |h: u64| {
                self.created
                    .iter()
                    .any(|((s, _), c)| *s == server && c.handles.contains(&h))
            };
            let has_chunk =
                |h: u64| present.contains(&(server, dir.join(h.to_string()))) || created(h);
            let held = self
                .chunks
                .of(server)
                .chain(self.logs.of(server).filter(|(_, h)| has_chunk(*h)));
            for (id, h) in held {
                on.entry(id).or_default().insert(server);
                chunk_of.insert(id, h);
            }
        }
        let mut out = Vec::new();
        for (id, offset) in acked {
            let holders = on.get(id).map(|s| s.len()).unwrap_or(0);
            if holders < QUORUM && self.reported.insert(*id) {
                // Where the chunk is on each server, for triage.
                let files: Vec<String> = chunk_of
                    .get(id)
                    .map(|h| {
                        let path = dir.join(h.to_string());
                        SERVERS
                            .iter()
                            .filter_map(|s| {
                                let len = disks[*s].durable_len(&path)?;
                                Some(format!("{s}: {len} durable bytes"))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(format!(
                    "at {at:?}: acknowledged record {id} (file offset {offset}) is durable on {holders} server(s): {:?}; its chunk {:?}: {files:?}",
                    on.get(id).cloned().unwrap_or_default(),
                    chunk_of.get(id)
                ));
            }
        }
        out
    }
}

/// The records in `bytes` with the bytes the nemesis flipped in them put back: a flip is the
/// nemesis's damage, which the scrubber and the master repair, not the system's.
fn unflipped(bytes: &[u8], flips: &[&Flip]) -> BTreeSet<RecordId> {
    if flips.is_empty() {
        return records(bytes);
    }
    let mut b = bytes.to_vec();
    for f in flips {
        if let Some(x) = b.get_mut(f.offset as usize) {
            *x = f.was;
        }
    }
    records(&b)
}

/// The records a write-ahead log's appends hold, with their chunks.
fn logged(bytes: &[u8]) -> BTreeSet<(RecordId, u64)> {
    gfs_storage::wal_appends(bytes::Bytes::copy_from_slice(bytes))
        .into_iter()
        .flat_map(|(h, _, data)| records(&data).into_iter().map(move |id| (id, h.0)))
        .collect()
}

/// The whole records in `bytes`.
fn records(bytes: &[u8]) -> BTreeSet<RecordId> {
    let mut out = BTreeSet::new();
    let mut pos = 0;
    while pos + HEADER <= bytes.len() {
        if let Some((id, len)) = parse_record(&bytes[pos..]) {
            out.insert(id);
            pos += len;
            continue;
        }
        pos = match bytes[pos + 1..]
            .windows(MAGIC.len())
            .position(|w| w == MAGIC)
        {
            Some(i) => pos + 1 + i,
            None => break,
        };
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gfs_testkit::record::record;
    use gfs_util::disk::{Disk, Open};

    fn id(seq: u32) -> RecordId {
        RecordId { writer: 1, seq }
    }

    fn disks() -> BTreeMap<String, SimDisk> {
        SERVERS
            .iter()
            .map(|s| {
                let d = SimDisk::new(1);
                d.create_dir_all(&data_dir()).unwrap();
                (s.to_string(), d)
            })
            .collect()
    }

    fn write(d: &SimDisk, handle: u64, bytes: &[u8], sync: bool) {
        let f = d
            .open(&data_dir().join(handle.to_string()), Open::Create)
            .unwrap();
        let at = f.len().unwrap();
        f.write_all_at(bytes, at).unwrap();
        if sync {
            f.sync_data().unwrap();
        }
    }

    #[test]
    fn a_record_durable_on_one_server_only_is_reported_once() {
        let d = disks();
        let (a, b) = (record(id(1), 40), record(id(2), 60));
        let mut both = vec![0u8; 7];
        both.extend_from_slice(&a);
        both.extend_from_slice(&b);
        write(&d["cs1"], 5, &both, true);
        write(&d["cs2"], 5, &a, true);
        write(&d["cs3"], 5, &b, false);
        let acked = [(id(1), 0), (id(2), 40)];
        let mut m = Durability::default();
        let found = m.check(&d, &acked, &[], Duration::ZERO);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("w1s2"), "{found:?}");
        assert!(
            m.check(&d, &acked, &[], Duration::ZERO).is_empty(),
            "reported twice"
        );
        // Once synced on a second server, a later record is fine too.
        write(&d["cs3"], 5, &record(id(3), 30), true);
        write(&d["cs4"], 9, &record(id(3), 30), true);
        assert!(m.check(&d, &[(id(3), 100)], &[], Duration::ZERO).is_empty());
    }

    /// The bytes of a real store's WAL after committing `data` to chunk 5 at offset 0 (and
    /// deleting the chunk, if `delete`).
    async fn wal_with(data: &bytes::Bytes, delete: bool) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let store = gfs_storage::ChunkStore::open(dir.path(), Default::default()).unwrap();
        let h = gfs_storage::ChunkHandle(5);
        store.create(h, 1).await.unwrap();
        store
            .stage(gfs_storage::StageRequest {
                op: gfs_storage::OpId(1),
                handle: h,
                version: 1,
                offset: 0,
                data: data.clone(),
            })
            .unwrap();
        store.commit(h, gfs_storage::OpId(1)).await.unwrap();
        if delete {
            store.delete(h).await.unwrap();
        }
        // Read while the store is open: closing it checkpoints and empties the log.
        std::fs::read(dir.path().join("wal")).unwrap()
    }

    #[tokio::test]
    async fn a_logged_record_counts_while_its_chunk_is_there() {
        let d = disks();
        let a = record(id(1), 40);
        let wal = wal_with(&a, false).await;
        assert!(
            !records(&wal).is_empty(),
            "the record is not inline in the WAL"
        );
        for s in ["cs1", "cs2"] {
            let f = d[s].open(&data_dir().join("wal"), Open::Create).unwrap();
            f.write_all_at(&wal, 0).unwrap();
            f.sync_data().unwrap();
            // The chunk's file exists, its bytes not yet there (as after a crash).
            write(&d[s], 5, b"", true);
        }
        let acked = [(id(1), 0)];
        let mut m = Durability::default();
        assert!(m.check(&d, &acked, &[], Duration::ZERO).is_empty());
        // A crash lost cs2's directory entry for the chunk: a replay makes it again from the
        // log's Create record, with the record.
        d["cs2"].remove_file(&data_dir().join("5")).unwrap();
        assert!(m.check(&d, &acked, &[], Duration::ZERO).is_empty());
        // cs2's replica is deleted: what its log still holds no longer counts.
        let deleted = wal_with(&a, true).await;
        let f = d["cs2"]
            .open(&data_dir().join("wal"), Open::Create)
            .unwrap();
        f.write_all_at(&deleted, 0).unwrap();
        f.sync_data().unwrap();
        assert_eq!(m.check(&d, &acked, &[], Duration::ZERO).len(), 1);
    }

    #[test]
    fn a_bit_the_nemesis_flipped_is_put_back_before_parsing() {
        let d = disks();
        let a = record(id(1), 40);
        write(&d["cs1"], 5, &a, true);
        write(&d["cs2"], 5, &a, true);
        let acked = [(id(1), 0)];
        let path = data_dir().join("5");
        assert!(d["cs2"].flip_bit(&path, 30, 1));
        let flip = Flip {
            server: "cs2",
            path: path.clone(),
            handle: 5,
            offset: 30,
            was: a[30],
        };
        let mut m = Durability::default();
        assert!(
            m.check(&d, &acked, std::slice::from_ref(&flip), Duration::ZERO)
                .is_empty()
        );
        // Without the flip to excuse it, the broken copy does not count.
        let mut blind = Durability::default();
        assert_eq!(blind.check(&d, &acked, &[], Duration::ZERO).len(), 1);
        // A replica deleted is gone, flip or not.
        d["cs2"].remove_file(&path).unwrap();
        let mut m = Durability::default();
        assert_eq!(m.check(&d, &acked, &[flip], Duration::ZERO).len(), 1);
    }
}
