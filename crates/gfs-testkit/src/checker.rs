//! The history checker: what a run acknowledged and sent, against what the file and every
//! replica hold.

use gfs_util::collections::HashMap;
use std::collections::BTreeMap;

use bytes::Bytes;

use crate::record::{MAGIC, RecordId, parse_record};

/// What a run sent and what it was told.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Every record sent, acknowledged or not, with its length.
    pub sent: HashMap<RecordId, usize>,
    /// Acknowledged records and the file offset each was given.
    pub acked: Vec<(RecordId, u64)>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Notes that record `id` of `len` bytes was sent (before its outcome is known).
    pub fn sent(&mut self, id: RecordId, len: usize) {
        self.sent.insert(id, len);
    }

    /// Notes that record `id` was acknowledged at file offset `offset`.
    pub fn acked(&mut self, id: RecordId, offset: u64) {
        self.acked.push((id, offset));
    }

    /// Adds another writer's history to this one.
    pub fn merge(&mut self, other: History) {
        self.sent.extend(other.sent);
        self.acked.extend(other.acked);
    }
}

/// One way a run broke the promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged record is not whole at the offset it was given.
    Lost {
        /// The record.
        id: RecordId,
        /// Its acknowledged offset.
        offset: u64,
        /// Where it was found instead (maybe nowhere).
        found_at: Vec<u64>,
    },
    /// A record appears more than once in the file.
    Duplicate {
        /// The record.
        id: RecordId,
        /// Every offset it appears at.
        offsets: Vec<u64>,
    },
    /// The same record was acknowledged at two offsets.
    AckedTwice {
        /// The record.
        id: RecordId,
        /// The offsets it was given.
        offsets: Vec<u64>,
    },
    /// A record in the file that was never sent (or was sent with another length).
    NeverSent {
        /// The record.
        id: RecordId,
        /// Where it is.
        offset: u64,
    },
    /// Bytes that are no whole record: torn, damaged or padding.
    Garbage {
        /// Where they start in the file.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// A replica breaks invariant I1, or the master's count disagrees with the disks.
    Replica {
        /// The chunk.
        handle: u64,
        /// What is wrong.
        detail: String,
    },
    /// An acknowledged record is on fewer current replicas than a quorum (invariant I2).
    UnderQuorum {
        /// The record.
        id: RecordId,
        /// Its acknowledged offset.
        offset: u64,
        /// The servers whose current replica holds it whole at that offset.
        on: Vec<String>,
        /// Every replica of its chunk on the disks, as `server vVERSION LENGTH` (and the
        /// chunk's version and sealed length in the master's view, first).
        replicas: Vec<String>,
    },
    /// `fsck`'s verdict disagrees with what is on the disks.
    Fsck {
        /// What is wrong.
        detail: String,
    },
}

/// Checks the file's bytes, as a sequential reader returns them, against the history: every
/// acknowledged record exactly once, whole, at its offset; no record never sent; no torn or
/// foreign bytes; no duplicate of any record, acknowledged or not. Returns what it found
/// wrong (nothing: the promise held).
pub fn check_file(h: &History, file: &[u8]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<RecordId, Vec<u64>> = BTreeMap::new();
    let mut pos = 0usize;
    while pos < file.len() {
        match parse_record(&file[pos..]) {
            Some((id, len)) => {
                if h.sent.get(&id) != Some(&len) {
                    out.push(Violation::NeverSent {
                        id,
                        offset: pos as u64,
                    });
                }
                seen.entry(id).or_default().push(pos as u64);
                pos += len;
            }
            None => {
                // Skip to the next place a whole record starts.
                let next = (pos + 1..file.len())
                    .find(|&i| file[i..].starts_with(MAGIC) && parse_record(&file[i..]).is_some())
                    .unwrap_or(file.len());
                out.push(Violation::Garbage {
                    offset: pos as u64,
                    len: (next - pos) as u64,
                });
                pos = next;
            }
        }
    }
    for (id, offsets) in &seen {
        if offsets.len() > 1 {
            out.push(Violation::Duplicate {
                id: *id,
                offsets: offsets.clone(),
            });
        }
    }
    let mut acked: BTreeMap<RecordId, Vec<u64>> = BTreeMap::new();
    for (id, offset) in &h.acked {
        acked.entry(*id).or_default().push(*offset);
    }
    for (id, offsets) in acked {
        if offsets.len() > 1 && offsets.iter().any(|o| *o != offsets[0]) {
            out.push(Violation::AckedTwice {
                id,
                offsets: offsets.clone(),
            });
        }
        let found_at = seen.get(&id).cloned().unwrap_or_default();
        if !found_at.contains(&offsets[0]) {
            out.push(Violation::Lost {
                id,
                offset: offsets[0],
                found_at,
            });
        }
    }
    out
}

/// A chunk of the file as the master describes it.
#[derive(Clone, Debug)]
pub struct ChunkView {
    /// The chunk.
    pub handle: u64,
    /// The master's version.
    pub version: u64,
    /// The agreed length, once sealed.
    pub sealed_length: Option<u64>,
    /// Where the chunk starts in the file.
    pub file_offset: u64,
    /// The servers the master counts as current replicas.
    pub counted: Vec<String>,
}

/// One replica as its server's disk holds it.
#[derive(Clone, Debug)]
pub struct ReplicaState {
    /// The server.
    pub server: String,
    /// The replica's version.
    pub version: u64,
    /// Its committed length.
    pub length: u64,
    /// Whether it is sealed.
    pub sealed: bool,
    /// A block failed its checksum when it was read.
    pub corrupt: bool,
    /// Its committed bytes (empty when corrupt).
    pub bytes: Bytes,
}

/// Whether `r` is a current replica of `c` (I1: the chunk's version and, once sealed, exactly
/// its sealed length).
pub fn is_current(c: &ChunkView, r: &ReplicaState) -> bool {
    !r.corrupt && r.version == c.version && c.sealed_length.is_none_or(|s| r.length == s)
}

/// Checks invariant I1 on every chunk of a file and the master's and `fsck`'s views against
/// the disks:
/// - every replica the master counts is on its server's disk and current;
/// - the counted replicas are byte-identical below the chunk's agreed length (the sealed
///   length, else the shortest counted one), and hold what the reader got for that range;
/// - with `fsck_healthy`, fsck calls the file healthy exactly when every chunk has `goal`
///   current replicas on the disks and no other (stale, short or corrupt) replica.
pub fn check_replicas(
    chunks: &[ChunkView],
    replicas: &BTreeMap<u64, Vec<ReplicaState>>,
    file: &[u8],
    goal: usize,
    fsck_healthy: Option<bool>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let none = Vec::new();
    let mut disks_healthy = true;
    let mut why = String::new();
    for c in chunks {
        let on_disk = replicas.get(&c.handle).unwrap_or(&none);
        let bad = |detail: String| Violation::Replica {
            handle: c.handle,
            detail,
        };
        let mut counted = Vec::new();
        for id in &c.counted {
            match on_disk.iter().find(|r| &r.server == id) {
                None => out.push(bad(format!("{id} is counted but holds no replica"))),
                Some(r) if !is_current(c, r) => out.push(bad(format!(
                    "{id} is counted but holds version {} length {} (chunk: version {}, sealed {:?})",
                    r.version, r.length, c.version, c.sealed_length
                ))),
                Some(r) => counted.push(r),
            }
        }
        let agreed = c
            .sealed_length
            .or_else(|| counted.iter().map(|r| r.length).min())
            .unwrap_or(0);
        if let Some(first) = counted.first() {
            let len = agreed.min(first.length) as usize;
            for r in &counted[1..] {
                let l = len.min(r.bytes.len());
                if let Some(i) = (0..l).find(|&i| r.bytes[i] != first.bytes[i]) {
                    out.push(bad(format!(
                        "{} and {} differ at byte {i} of the chunk",
                        first.server, r.server
                    )));
                }
            }
            let start = (c.file_offset as usize).min(file.len());
            let seen = &file[start..(start + len).min(file.len())];
            if let Some(i) =
                (0..seen.len().min(first.bytes.len())).find(|&i| seen[i] != first.bytes[i])
            {
                out.push(bad(format!(
                    "the reader got other bytes than {} holds, at byte {i} of the chunk",
                    first.server
                )));
            }
        }
        let current = on_disk.iter().filter(|r| is_current(c, r)).count();
        if (current < goal || current < on_disk.len()) && disks_healthy {
            disks_healthy = false;
            why = format!(
                " (chunk {} at version {} sealed {:?}: {current} current of {goal}; on the disks: {})",
                c.handle,
                c.version,
                c.sealed_length,
                on_disk
                    .iter()
                    .map(|r| format!(
                        "{} v{} {} B{}",
                        r.server,
                        r.version,
                        r.length,
                        if r.sealed { " sealed" } else { "" }
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if let Some(fsck) = fsck_healthy
        && fsck != disks_healthy
    {
        out.push(Violation::Fsck {
            detail: format!(
                "fsck says {}, the disks say {}{why}",
                if fsck { "healthy" } else { "unhealthy" },
                if disks_healthy {
                    "healthy"
                } else {
                    "unhealthy"
                }
            ),
        });
    }
    out
}

/// Checks invariant I2 on the disks: every acknowledged record is whole, at its offset, on at
/// least `quorum` replicas that are current for the chunk it landed in (whether or not the
/// master counts them yet; at the view's version or a later one the master bumped them to
/// after the view was taken). Meant for the moment right after a fault, before any repair.
pub fn check_quorum(
    h: &History,
    chunks: &[ChunkView],
    replicas: &BTreeMap<u64, Vec<ReplicaState>>,
    quorum: usize,
) -> Vec<Violation> {
    let none = Vec::new();
    let mut out = Vec::new();
    for &(id, offset) in &h.acked {
        let Some(&len) = h.sent.get(&id) else {
            continue;
        };
        let want = crate::record::record(id, len);
        let Some(c) = chunks
            .iter()
            .filter(|c| c.file_offset <= offset)
            .max_by_key(|c| c.file_offset)
        else {
            out.push(Violation::UnderQuorum {
                id,
                offset,
                on: Vec::new(),
                replicas: Vec::new(),
            });
            continue;
        };
        let at = (offset - c.file_offset) as usize;
        let replicas_of = |h: u64| replicas.get(&h).unwrap_or(&none);
        let on: Vec<String> = replicas_of(c.handle)
            .iter()
            .filter(|r| {
                // A bump between the observation and the servers' stop leaves the replicas
                // that took it one version ahead of the view: current all the same.
                let ahead = ChunkView {
                    version: r.version.max(c.version),
                    ..c.clone()
                };
                is_current(&ahead, r) && r.bytes.get(at..at + len) == Some(&want[..])
            })
            .map(|r| r.server.clone())
            .collect();
        if on.len() < quorum {
            let mut replicas = vec![format!(
                "chunk {} v{} sealed {:?} at file offset {}",
                c.handle, c.version, c.sealed_length, c.file_offset
            )];
            replicas.extend(replicas_of(c.handle).iter().map(|r| {
                format!(
                    "{} v{} {}{}",
                    r.server,
                    r.version,
                    r.length,
                    if r.sealed { " sealed" } else { "" }
                )
            }));
            out.push(Violation::UnderQuorum {
                id,
                offset,
                on,
                replicas,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::record::record;

    fn id(w: u32, s: u32) -> RecordId {
        RecordId { writer: w, seq: s }
    }

    /// A file of records `ids` (each 100 + 10·seq bytes) and a history that sent and
    /// acknowledged them all where they are.
    fn run(ids: &[RecordId]) -> (History, Vec<u8>) {
        let mut h = History::new();
        let mut file = Vec::new();
        for &i in ids {
            let r = record(i, 100 + 10 * i.seq as usize);
            h.sent(i, r.len());
            h.acked(i, file.len() as u64);
            file.extend_from_slice(&r);
        }
        (h, file)
    }

    #[test]
    fn a_clean_run_passes() {
        let (h, file) = run(&[id(0, 0), id(1, 0), id(0, 1)]);
        assert_eq!(check_file(&h, &file), vec![]);
    }

    #[test]
    fn each_kind_of_damage_is_reported() {
        let (mut h, mut file) = run(&[id(0, 0), id(1, 0), id(0, 1)]);
        // A duplicate of an unacknowledged record, and that record sent.
        let extra = record(id(2, 0), 50);
        h.sent(id(2, 0), 50);
        file.extend_from_slice(&extra);
        file.extend_from_slice(&extra);
        // Something never sent.
        file.extend_from_slice(&record(id(9, 9), 40));
        // A torn tail.
        file.extend_from_slice(&record(id(3, 0), 60)[..30]);
        let v = check_file(&h, &file);
        assert!(
            v.iter()
                .any(|x| matches!(x, Violation::Duplicate { id: i, .. } if *i == id(2, 0))),
            "{v:?}"
        );
        assert!(
            v.iter()
                .any(|x| matches!(x, Violation::NeverSent { id: i, .. } if *i == id(9, 9))),
            "{v:?}"
        );
        assert!(
            v.iter()
                .any(|x| matches!(x, Violation::Garbage { len: 30, .. })),
            "{v:?}"
        );

        // An acknowledged record at the wrong offset, and one missing.
        let (mut h, file) = run(&[id(0, 0), id(0, 1)]);
        h.acked[1].1 += 1;
        h.acked(id(5, 5), 0);
        let v = check_file(&h, &file);
        assert!(v.iter().any(|x| matches!(x, Violation::Lost { id: i, found_at, .. } if *i == id(0, 1) && found_at.len() == 1)), "{v:?}");
        assert!(v.iter().any(|x| matches!(x, Violation::Lost { id: i, found_at, .. } if *i == id(5, 5) && found_at.is_empty())), "{v:?}");
    }

    fn replica(server: &str, version: u64, bytes: &[u8], sealed: bool) -> ReplicaState {
        ReplicaState {
            server: server.into(),
            version,
            length: bytes.len() as u64,
            sealed,
            corrupt: false,
            bytes: Bytes::copy_from_slice(bytes),
        }
    }

    #[test]
    fn replicas_are_checked_against_i1_and_fsck() {
        let data = b"0123456789".to_vec();
        let view = ChunkView {
            handle: 1,
            version: 3,
            sealed_length: Some(10),
            file_offset: 0,
            counted: vec!["a".into(), "b".into(), "c".into()],
        };
        let good: BTreeMap<u64, Vec<ReplicaState>> = [(
            1,
            vec![
                replica("a", 3, &data, true),
                replica("b", 3, &data, true),
                replica("c", 3, &data, true),
            ],
        )]
        .into();
        assert_eq!(
            check_replicas(std::slice::from_ref(&view), &good, &data, 3, Some(true)),
            vec![]
        );
        // fsck disagreeing with healthy disks.
        assert!(matches!(
            check_replicas(std::slice::from_ref(&view), &good, &data, 3, Some(false))[..],
            [Violation::Fsck { .. }]
        ));
        // A counted replica that ends short of the sealed length (same version).
        let mut short = good.clone();
        short.get_mut(&1).unwrap()[2] = replica("c", 3, &data[..8], false);
        let v = check_replicas(std::slice::from_ref(&view), &short, &data, 3, Some(true));
        assert!(
            v.iter().any(
                |x| matches!(x, Violation::Replica { detail, .. } if detail.contains("length 8"))
            ),
            "{v:?}"
        );
        assert!(
            v.iter().any(|x| matches!(x, Violation::Fsck { .. })),
            "{v:?}"
        );
        // Same version and length, other bytes.
        let mut other = good.clone();
        other.get_mut(&1).unwrap()[1] = replica("b", 3, b"0123X56789", true);
        let v = check_replicas(std::slice::from_ref(&view), &other, &data, 3, None);
        assert!(v.iter().any(|x| matches!(x, Violation::Replica { detail, .. } if detail.contains("differ at byte 4"))), "{v:?}");
        // The reader saw other bytes than the replicas hold.
        let v = check_replicas(&[view], &good, b"01234567X9", 3, None);
        assert!(
            v.iter().any(
                |x| matches!(x, Violation::Replica { detail, .. } if detail.contains("reader"))
            ),
            "{v:?}"
        );
    }

    #[test]
    fn every_acknowledged_record_must_be_on_a_quorum_of_current_replicas() {
        let (h, file) = run(&[id(0, 0), id(1, 0)]);
        let view = ChunkView {
            handle: 7,
            version: 2,
            sealed_length: None,
            file_offset: 0,
            counted: vec![],
        };
        let short = &file[..file.len() - 1];
        let disks = |b: ReplicaState| -> BTreeMap<u64, Vec<ReplicaState>> {
            [(7, vec![replica("a", 2, &file, false), b])].into()
        };
        let v = |b| check_quorum(&h, std::slice::from_ref(&view), &disks(b), 2);
        assert_eq!(v(replica("b", 2, &file, false)), vec![]);
        // A replica the master bumped after the view was taken still counts.
        assert_eq!(v(replica("b", 3, &file, false)), vec![]);
        // Stale (an older version) or short of the last record: one copy only.
        assert!(matches!(
            &v(replica("b", 1, &file, false))[..],
            [Violation::UnderQuorum { .. }, Violation::UnderQuorum { .. }]
        ));
        assert!(matches!(
            &v(replica("b", 2, short, false))[..],
            [Violation::UnderQuorum { id: i, on, .. }] if *i == id(1, 0) && on == &["a".to_string()]
        ));
    }
}
