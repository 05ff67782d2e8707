//! The namespace and chunk map: a deterministic state machine that log records drive.
//!
//! Paths live in one ordered map, so listing a directory is a range scan and renaming a
//! directory moves a contiguous range. Each chunk costs one map entry plus one handle in its
//! file's list (80 bytes per chunk in all, measured by `cargo bench -p gfs-master`). The server
//! each chunk's last lease went to (`ChunkMeta::primary`) is a `u32` into a table of
//! chunkserver ids the namespace interns (a handful of strings for the whole cluster; 0 when
//! unknown), written in the checkpoint: a restarted master asks exactly that server whether
//! the lease is still in force (I5).

use gfs_util::collections::{HashMap, HashSet};
use std::collections::BTreeMap;

use crate::error::{MasterError, Result};
use crate::path;
use crate::record::{
    AddChunkOp, Checkpoint, ChunkEntry, CreateOp, CreateWithChunkOp, Entry, Op, Uncreated,
};

/// A directory or a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir {
        /// Last modification, ms since the Unix epoch.
        mtime_ms: u64,
    },
    /// A file.
    File {
        /// Last modification, ms since the Unix epoch.
        mtime_ms: u64,
        /// Replicas per chunk.
        replication: u32,
        /// Chunk handles in file order.
        chunks: Vec<u64>,
    },
}

/// What the master knows of a chunk (locations are not persisted: heartbeats rebuild them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkMeta {
    /// Current version.
    pub version: u64,
    /// Length it was sealed at, once sealed.
    pub sealed_length: Option<u64>,
    /// The server the lease at `version` was granted to ([`Namespace::server`]); 0: unknown
    /// (logged by an older version, or a version adopted from a report, at which no lease
    /// was granted).
    pub primary: u32,
    /// How many servers it was placed on (`AddChunkOp::placed`, at most 255 kept); 0:
    /// unknown (logged by an older version).
    pub placed: u8,
    /// How far `version` is past the last version a record named a primary at (the chunk's
    /// last lease), plus one: 1 while the current version is leased; 0: unknown (logged by an
    /// older version, or too far past it). See [`ChunkMeta::last_leased`].
    pub since_lease: u16,
}

impl ChunkMeta {
    /// The version of the chunk's last lease, when known: no lease was granted at any version
    /// after it (every lease is logged, with its primary, before it is granted).
    pub fn last_leased(&self) -> Option<u64> {
        let back = u64::from(self.since_lease.checked_sub(1)?);
        self.version.checked_sub(back)
    }

    /// `since_lease` once the version moves to `version` with no lease (a fence, or a version
    /// adopted from a report).
    fn since_lease_at(&self, version: u64) -> u16 {
        self.last_leased()
            .and_then(|leased| version.checked_sub(leased))
            .and_then(|past| u16::try_from(past.checked_add(1)?).ok())
            .unwrap_or(0)
    }
}

/// One entry of a directory listing or a stat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Normalized absolute path.
    pub path: String,
    /// Whether it is a directory.
    pub dir: bool,
    /// Last modification, ms since the Unix epoch.
    pub mtime_ms: u64,
    /// Replicas per chunk (files).
    pub replication: u32,
    /// Number of chunks (files).
    pub chunks: u64,
}

/// The metadata state.
#[derive(Debug, Default)]
pub struct Namespace {
    nodes: BTreeMap<String, Node>,
    chunks: HashMap<u64, ChunkMeta>,
    /// Chunkserver ids named as primaries: `ChunkMeta::primary` `i` is `servers[i - 1]`.
    servers: Vec<String>,
    /// The index of each id in `servers`, plus one.
    server_index: HashMap<String, u32>,
    /// The servers the creation of each unsealed chunk failed on, for the chunks where it
    /// failed on some (`AddChunkOp::uncreated`): few, so kept aside, not in every `ChunkMeta`
    /// (ordered: a hash map would draw its seed from the simulator's one stream of draws).
    uncreated: BTreeMap<u64, Vec<Uncreated>>,
}

impl Namespace {
    /// An empty namespace (just `/`).
    pub fn new() -> Namespace {
        Namespace::default()
    }

    /// The index of server `id` in the table, plus one (added if new); 0 for the empty id.
    fn intern(&mut self, id: &str) -> u32 {
        if id.is_empty() {
            return 0;
        }
        if let Some(i) = self.server_index.get(id) {
            return *i;
        }
        self.servers.push(id.to_string());
        let i = self.servers.len() as u32;
        self.server_index.insert(id.to_string(), i);
        i
    }

    /// The id of the server at index `i` of the table (`ChunkMeta::primary`); `None` for 0
    /// (unknown).
    pub fn server(&self, i: u32) -> Option<&str> {
        let at = (i as usize).checked_sub(1)?;
        self.servers.get(at).map(String::as_str)
    }

    /// The unsealed chunks whose creation failed on `server` while it ran on the data
    /// directory `disk_id` (never for 0, an unknown one).
    pub fn uncreated_on(&self, server: &str, disk_id: u64) -> Vec<u64> {
        if disk_id == 0 {
            return Vec::new();
        }
        let mut found: Vec<u64> = self
            .uncreated
            .iter()
            .filter(|(_, on)| {
                on.iter()
                    .any(|u| u.server == server && u.disk_id == disk_id)
            })
            .map(|(h, _)| *h)
            .collect();
        found.sort_unstable();
        found
    }

    /// The server the lease at `handle`'s current version was granted to, when known.
    pub fn last_primary(&self, handle: u64) -> Option<&str> {
        self.server(self.chunks.get(&handle)?.primary)
    }

    fn dir_exists(&self, p: &str) -> Result<()> {
        if p == "/" {
            return Ok(());
        }
        match self.nodes.get(p) {
            Some(Node::Dir { .. }) => Ok(()),
            Some(Node::File { .. }) => Err(MasterError::NotADirectory(p.into())),
            None => Err(MasterError::NotFound(p.into())),
        }
    }

    fn absent(&self, p: &str) -> Result<()> {
        if p == "/" || self.nodes.contains_key(p) {
            return Err(MasterError::AlreadyExists(p.into()));
        }
        Ok(())
    }

    /// Checks that a new name `p` can be made: nothing there, and its parent a directory.
    fn can_make(&self, p: &str) -> Result<()> {
        self.absent(p)?;
        self.dir_exists(path::parent(p))
    }

    /// Checks that no chunk has the handle `h` yet.
    fn new_handle(&self, h: u64) -> Result<()> {
        if self.chunks.contains_key(&h) {
            return Err(MasterError::ChunkExists(h));
        }
        Ok(())
    }

    /// Checks that `op` applies to the current state, without changing it.
    pub fn check(&self, op: &Op) -> Result<()> {
        match op {
            Op::Mkdir(m) => self.can_make(&m.path),
            Op::Create(c) => self.can_make(&c.path),
            Op::CreateWithChunk(cw) => {
                let (c, a) = file_and_chunk(cw)?;
                self.can_make(&c.path)?;
                if a.path != c.path {
                    return Err(MasterError::Internal(format!(
                        "a record creating {} with a first chunk of {}",
                        c.path, a.path
                    )));
                }
                self.new_handle(a.handle)
            }
            Op::Delete(d) => {
                if d.path == "/" {
                    return Err(MasterError::InvalidPath {
                        path: "/".into(),
                        reason: "the root cannot be deleted",
                    });
                }
                match self.nodes.get(&d.path) {
                    None => Err(MasterError::NotFound(d.path.clone())),
                    Some(Node::Dir { .. })
                        if !d.recursive && self.subtree(&d.path).nth(1).is_some() =>
                    {
                        Err(MasterError::DirectoryNotEmpty(d.path.clone()))
                    }
                    Some(_) => Ok(()),
                }
            }
            Op::Rename(r) => {
                if !self.nodes.contains_key(&r.src) {
                    return Err(MasterError::NotFound(r.src.clone()));
                }
                if r.dst.starts_with(&format!("{}/", r.src)) {
                    return Err(MasterError::RenameIntoSelf {
                        src: r.src.clone(),
                        dst: r.dst.clone(),
                    });
                }
                self.can_make(&r.dst)
            }
            Op::AddChunk(a) => {
                self.new_handle(a.handle)?;
                match self.nodes.get(&a.path) {
                    Some(Node::File { .. }) => Ok(()),
                    Some(Node::Dir { .. }) => Err(MasterError::IsADirectory(a.path.clone())),
                    None => Err(MasterError::NotFound(a.path.clone())),
                }
            }
            Op::SetVersion(v) => self
                .chunks
                .get(&v.handle)
                .map(|_| ())
                .ok_or(MasterError::ChunkNotFound(v.handle)),
            Op::Seal(s) => self
                .chunks
                .get(&s.handle)
                .map(|_| ())
                .ok_or(MasterError::ChunkNotFound(s.handle)),
        }
    }

    /// Makes the empty file `c` creates.
    fn insert_file(&mut self, c: &CreateOp) {
        self.nodes.insert(
            c.path.clone(),
            Node::File {
                mtime_ms: c.mtime_ms,
                replication: c.replication,
                chunks: Vec::new(),
            },
        );
    }

    /// Appends the chunk `a` adds to its file.
    fn add_chunk(&mut self, a: &AddChunkOp) {
        if let Some(Node::File { chunks, .. }) = self.nodes.get_mut(&a.path) {
            chunks.push(a.handle);
        }
        let primary = self.intern(&a.primary);
        self.chunks.insert(
            a.handle,
            ChunkMeta {
                version: a.version,
                sealed_length: None,
                primary,
                placed: u8::try_from(a.placed).unwrap_or(u8::MAX),
                since_lease: u16::from(primary != 0),
            },
        );
        let failed = known_disks(&a.uncreated);
        if !failed.is_empty() {
            self.uncreated.insert(a.handle, failed);
        }
    }

    /// Applies `op`; returns the chunk handles it removed (a delete). Fails, changing nothing,
    /// when [`Namespace::check`] would.
    pub fn apply(&mut self, op: &Op) -> Result<Vec<u64>> {
        self.check(op)?;
        let mut removed = Vec::new();
        match op {
            Op::Mkdir(m) => {
                self.nodes.insert(
                    m.path.clone(),
                    Node::Dir {
                        mtime_ms: m.mtime_ms,
                    },
                );
            }
            Op::Create(c) => self.insert_file(c),
            Op::CreateWithChunk(cw) => {
                let (c, a) = file_and_chunk(cw)?;
                self.insert_file(c);
                self.add_chunk(a);
            }
            Op::Delete(d) => {
                let doomed: Vec<String> = self.subtree(&d.path).map(|(p, _)| p.clone()).collect();
                for p in doomed {
                    if let Some(Node::File { chunks, .. }) = self.nodes.remove(&p) {
                        for h in chunks {
                            self.chunks.remove(&h);
                            self.uncreated.remove(&h);
                            removed.push(h);
                        }
                    }
                }
            }
            Op::Rename(r) => {
                let moving: Vec<String> = self.subtree(&r.src).map(|(p, _)| p.clone()).collect();
                for p in moving {
                    if let Some(node) = self.nodes.remove(&p) {
                        let to = format!("{}{}", r.dst, &p[r.src.len()..]);
                        self.nodes.insert(to, node);
                    }
                }
            }
            Op::AddChunk(a) => self.add_chunk(a),
            Op::SetVersion(v) => {
                let primary = self.intern(&v.primary);
                if let Some(c) = self.chunks.get_mut(&v.handle) {
                    c.since_lease = if primary != 0 {
                        1
                    } else {
                        c.since_lease_at(v.version)
                    };
                    c.version = v.version;
                    c.primary = primary;
                }
            }
            Op::Seal(s) => {
                if let Some(c) = self.chunks.get_mut(&s.handle) {
                    c.sealed_length = Some(s.length);
                }
                // A sealed chunk needs no witness of its length.
                self.uncreated.remove(&s.handle);
            }
        }
        Ok(removed)
    }

    /// `path` and everything under it, in path order.
    fn subtree<'a>(&'a self, p: &'a str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let prefix = format!("{p}/");
        self.nodes
            .range(p.to_string()..)
            .take_while(move |(k, _)| k.as_str() == p || k.starts_with(&prefix))
    }

    fn stat_of(p: &str, node: &Node) -> Stat {
        match node {
            Node::Dir { mtime_ms } => Stat {
                path: p.into(),
                dir: true,
                mtime_ms: *mtime_ms,
                replication: 0,
                chunks: 0,
            },
            Node::File {
                mtime_ms,
                replication,
                chunks,
            } => Stat {
                path: p.into(),
                dir: false,
                mtime_ms: *mtime_ms,
                replication: *replication,
                chunks: chunks.len() as u64,
            },
        }
    }

    /// The entry at `path`.
    pub fn stat(&self, p: &str) -> Result<Stat> {
        if p == "/" {
            return Ok(Stat::from_root());
        }
        self.nodes
            .get(p)
            .map(|n| Self::stat_of(p, n))
            .ok_or_else(|| MasterError::NotFound(p.into()))
    }

    /// The entries directly inside directory `path`, in name order.
    pub fn list(&self, p: &str) -> Result<Vec<Stat>> {
        self.dir_exists(p)?;
        let prefix = if p == "/" {
            "/".to_string()
        } else {
            format!("{p}/")
        };
        Ok(self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(k, n)| Self::stat_of(k, n))
            .collect())
    }

    /// The chunk handles of file `path`, in order.
    pub fn chunks_of(&self, p: &str) -> Result<&[u64]> {
        match self.nodes.get(p) {
            Some(Node::File { chunks, .. }) => Ok(chunks),
            Some(Node::Dir { .. }) => Err(MasterError::IsADirectory(p.into())),
            None => Err(MasterError::NotFound(p.into())),
        }
    }

    /// Unsealed chunks that are not the last of their file: chunks abandoned when they lost
    /// their quorum, whose length is settled once enough replicas return.
    pub fn unsettled(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for node in self.nodes.values() {
            if let Node::File { chunks, .. } = node {
                for h in chunks.iter().take(chunks.len().saturating_sub(1)) {
                    if self
                        .chunks
                        .get(h)
                        .is_some_and(|m| m.sealed_length.is_none())
                    {
                        out.push(*h);
                    }
                }
            }
        }
        out
    }

    /// The chunks of the files at or under `p`.
    pub fn chunks_under(&self, p: &str) -> HashSet<u64> {
        self.subtree(p)
            .filter_map(|(_, n)| match n {
                Node::File { chunks, .. } => Some(chunks.iter().copied()),
                Node::Dir { .. } => None,
            })
            .flatten()
            .collect()
    }

    /// The files at or under `p` (every file for `/`), with their chunks, in path order.
    pub fn files_under(&self, p: &str) -> Vec<(String, Vec<u64>)> {
        let all: Box<dyn Iterator<Item = (&String, &Node)>> = if p == "/" {
            Box::new(self.nodes.iter())
        } else {
            Box::new(self.subtree(p))
        };
        all.filter_map(|(path, n)| match n {
            Node::File { chunks, .. } => Some((path.clone(), chunks.clone())),
            Node::Dir { .. } => None,
        })
        .collect()
    }

    /// How many files and directories (the root not counted) there are.
    pub fn counts(&self) -> (u64, u64) {
        let files = self
            .nodes
            .values()
            .filter(|n| matches!(n, Node::File { .. }))
            .count() as u64;
        (files, self.nodes.len() as u64 - files)
    }

    /// Every chunk with what the master knows of it.
    pub fn chunk_metas(&self) -> Vec<(u64, ChunkMeta)> {
        self.chunks.iter().map(|(h, m)| (*h, *m)).collect()
    }

    /// What the master knows of a chunk.
    pub fn chunk(&self, handle: u64) -> Option<ChunkMeta> {
        self.chunks.get(&handle).copied()
    }

    /// Number of chunks in the map.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// The largest chunk handle in use (0 when none).
    pub fn max_handle(&self) -> u64 {
        self.chunks.keys().copied().max().unwrap_or(0)
    }

    /// The state as a checkpoint through `seq`.
    pub fn to_checkpoint(&self, seq: u64) -> Checkpoint {
        let entries = self
            .nodes
            .iter()
            .map(|(p, n)| match n {
                Node::Dir { mtime_ms } => Entry {
                    path: p.clone(),
                    dir: true,
                    mtime_ms: *mtime_ms,
                    replication: 0,
                    chunks: Vec::new(),
                },
                Node::File {
                    mtime_ms,
                    replication,
                    chunks,
                } => Entry {
                    path: p.clone(),
                    dir: false,
                    mtime_ms: *mtime_ms,
                    replication: *replication,
                    chunks: chunks
                        .iter()
                        .map(|h| {
                            let c = self.chunks.get(h).copied().unwrap_or(ChunkMeta {
                                version: 0,
                                sealed_length: None,
                                primary: 0,
                                placed: 0,
                                since_lease: 0,
                            });
                            ChunkEntry {
                                handle: *h,
                                version: c.version,
                                sealed_length: c.sealed_length,
                                primary: c.primary,
                                uncreated: self.uncreated.get(h).cloned().unwrap_or_default(),
                                placed: u32::from(c.placed),
                                since_lease: u32::from(c.since_lease),
                            }
                        })
                        .collect(),
                },
            })
            .collect();
        Checkpoint {
            seq,
            entries,
            servers: self.servers.clone(),
        }
    }

    /// The state a checkpoint describes.
    pub fn from_checkpoint(c: Checkpoint) -> Namespace {
        let mut ns = Namespace::new();
        for id in &c.servers {
            // Kept at its index even if repeated, so the entries' indexes stay right.
            ns.servers.push(id.clone());
            let i = ns.servers.len() as u32;
            ns.server_index.entry(id.clone()).or_insert(i);
        }
        let known = ns.servers.len() as u32;
        for e in c.entries {
            let node = if e.dir {
                Node::Dir {
                    mtime_ms: e.mtime_ms,
                }
            } else {
                for ch in &e.chunks {
                    let failed = known_disks(&ch.uncreated);
                    if ch.sealed_length.is_none() && !failed.is_empty() {
                        ns.uncreated.insert(ch.handle, failed);
                    }
                    ns.chunks.insert(
                        ch.handle,
                        ChunkMeta {
                            version: ch.version,
                            sealed_length: ch.sealed_length,
                            // An index past the table (a damaged checkpoint) means unknown.
                            primary: if ch.primary <= known { ch.primary } else { 0 },
                            placed: u8::try_from(ch.placed).unwrap_or(u8::MAX),
                            since_lease: u16::try_from(ch.since_lease).unwrap_or(0),
                        },
                    );
                }
                Node::File {
                    mtime_ms: e.mtime_ms,
                    replication: e.replication,
                    chunks: e.chunks.iter().map(|c| c.handle).collect(),
                }
            };
            ns.nodes.insert(e.path, node);
        }
        ns
    }
}

/// The file and the chunk a `CreateWithChunk` record holds; a record missing either is
/// refused.
fn file_and_chunk(cw: &CreateWithChunkOp) -> Result<(&CreateOp, &AddChunkOp)> {
    match (&cw.create, &cw.chunk) {
        (Some(c), Some(a)) => Ok((c, a)),
        _ => Err(MasterError::Internal(
            "a record creating a file with its first chunk lacks one of them".into(),
        )),
    }
}

/// The failed creations of `on` whose server's data directory is known (a creation on an
/// unknown one witnesses nothing after a restart).
fn known_disks(on: &[Uncreated]) -> Vec<Uncreated> {
    on.iter().filter(|u| u.disk_id != 0).cloned().collect()
}

impl Stat {
    fn from_root() -> Stat {
        Stat {
            path: "/".into(),
            dir: true,
            mtime_ms: 0,
            replication: 0,
            chunks: 0,
        }
    }
}

#[cfg(test)]
mod tests;
