//! A fake cluster behind [`ChunkserverControl`] for unit tests of the master's decisions:
//! each server's replicas (version, committed length, sealed), servers that are down, calls
//! that fail, appends that commit at the old version just before a fence lands, and every
//! lease granted. It keeps the chunkserver's rules that the decisions rely on: a SetVersion
//! answers the committed length once the new version holds, a catch-up copies up to the
//! source's length at the same version (and fails with DATA_LOSS from a rotten source, having
//! copied what came before the rot, and on a sealed target), a seal short of the replica's length fails, a SetVersion on a sealed replica
//! says it is sealed.

use gfs_util::collections::{HashMap, HashSet};

use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::control::{ChunkCopy, ChunkserverControl, ControlError, Fenced, LeaseGrant};
use crate::registry::ServerInfo;

/// One replica as the fake server holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) version: u64,
    pub(super) length: u64,
    pub(super) sealed: bool,
}

/// Which call a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Call {
    Create,
    SetVersion,
    Length,
    Grant,
    Copy,
    Seal,
}

#[derive(Default)]
struct State {
    /// `(server id, handle)` -> replica.
    replicas: HashMap<(String, u64), Held>,
    /// Servers whose every call fails (down, or cut off from the master).
    down: HashSet<String>,
    /// Calls of a kind that fail on a server, however many times they are made.
    failing: HashSet<(String, Call)>,
    /// Bytes that commit at the old version on a server just before its next SetVersion of
    /// the chunk takes effect (an append of the primary still on its way).
    in_flight: HashMap<(String, u64), u64>,
    /// Replicas whose bytes fail their checksums when a copy reads them: `(server id, handle)`
    /// -> the good prefix a catch-up copies before it meets the rot.
    rotten: HashMap<(String, u64), u64>,
    /// Replicas leading the chunk's lease: `(server id, handle)` -> (the lease's version, the
    /// longest end it may have acknowledged), told by the next SetVersion that ends it.
    led: HashMap<(String, u64), (u64, u64)>,
    /// Every lease granted: (primary id, the grant).
    leases: Vec<(String, LeaseGrant)>,
    /// Every call made: (server id, call).
    calls: Vec<(String, Call)>,
}

/// The fake cluster.
#[derive(Default)]
pub(super) struct FakeCluster {
    state: Mutex<State>,
}

/// The server id behind a replication-plane address (`<id>:1` in these tests).
fn id_of(repl_addr: &str) -> String {
    repl_addr.trim_end_matches(":1").to_string()
}

impl FakeCluster {
    /// Puts a replica of `handle` on `id`.
    pub(super) fn hold(&self, id: &str, handle: u64, held: Held) {
        self.state
            .lock()
            .replicas
            .insert((id.to_string(), handle), held);
    }

    /// `id`'s replica of `handle`, if it has one.
    pub(super) fn replica(&self, id: &str, handle: u64) -> Option<Held> {
        self.state
            .lock()
            .replicas
            .get(&(id.to_string(), handle))
            .copied()
    }

    /// Every call to `id` fails (`down`) or succeeds again.
    pub(super) fn set_down(&self, id: &str, down: bool) {
        let mut s = self.state.lock();
        if down {
            s.down.insert(id.to_string());
        } else {
            s.down.remove(id);
        }
    }

    /// `id`'s replica of `handle` fails its checksums when a copy reads it (bit rot no scrub
    /// has found yet: its version and length are still sound).
    pub(super) fn rot(&self, id: &str, handle: u64) {
        self.rot_past(id, handle, 0);
    }

    /// [`FakeCluster::rot`] past its first `good` bytes: a catch-up from it copies them, then
    /// fails.
    pub(super) fn rot_past(&self, id: &str, handle: u64, good: u64) {
        self.state
            .lock()
            .rotten
            .insert((id.to_string(), handle), good);
    }

    /// Every `call` to `id` fails.
    pub(super) fn fail(&self, id: &str, call: Call) {
        self.state.lock().failing.insert((id.to_string(), call));
    }

    /// Calls to `id` set to fail succeed again.
    pub(super) fn heal(&self, id: &str) {
        self.state.lock().failing.retain(|(s, _)| s != id);
    }

    /// `bytes` commit on `id`'s replica of `handle` at its old version just before its next
    /// SetVersion takes effect.
    pub(super) fn commit_before_fence(&self, id: &str, handle: u64, bytes: u64) {
        self.state
            .lock()
            .in_flight
            .insert((id.to_string(), handle), bytes);
    }

    /// `id` held `handle`'s lease at `version` (until a new grant to it) and acknowledged
    /// nothing past `bound`: it says so at every fence past that version, as a chunkserver
    /// does until it restarts.
    pub(super) fn led(&self, id: &str, handle: u64, version: u64, bound: u64) {
        self.state
            .lock()
            .led
            .insert((id.to_string(), handle), (version, bound));
    }

    /// Every lease granted so far: (primary id, grant).
    pub(super) fn leases(&self) -> Vec<(String, LeaseGrant)> {
        self.state.lock().leases.clone()
    }

    /// How many `call`s were made to `id`.
    pub(super) fn calls(&self, id: &str, call: Call) -> usize {
        self.state
            .lock()
            .calls
            .iter()
            .filter(|(s, c)| s == id && *c == call)
            .count()
    }

    /// Runs one call on `id`: fails it when `id` is down or the call is set to fail, else
    /// applies `f` to the state.
    fn call<T>(
        &self,
        id: &str,
        call: Call,
        f: impl FnOnce(&mut State) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let mut s = self.state.lock();
        s.calls.push((id.to_string(), call));
        if s.down.contains(id) {
            return Err(ControlError::Failed(format!("{id} is down")));
        }
        if s.failing.contains(&(id.to_string(), call)) {
            return Err(ControlError::Failed(format!("{call:?} fails on {id}")));
        }
        f(&mut s)
    }
}

fn missing(id: &str, handle: u64) -> ControlError {
    ControlError::NotFound(format!("{id} holds no chunk {handle}"))
}

impl ChunkserverControl for FakeCluster {
    fn create_chunk<'a>(
        &'a self,
        server: &'a ServerInfo,
        handle: u64,
        version: u64,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        let r = self.call(&server.id, Call::Create, |s| {
            s.replicas.insert(
                (server.id.clone(), handle),
                Held {
                    version,
                    length: 0,
                    sealed: false,
                },
            );
            Ok(())
        });
        Box::pin(async move { r })
    }

    fn set_version<'a>(
        &'a self,
        server: &'a ServerInfo,
        handle: u64,
        version: u64,
    ) -> BoxFuture<'a, Result<Fenced, ControlError>> {
        let r = self.call(&server.id, Call::SetVersion, |s| {
            let key = (server.id.clone(), handle);
            let late = s.in_flight.remove(&key).unwrap_or(0);
            let led = s.led.get(&key).copied();
            let r = s
                .replicas
                .get_mut(&key)
                .ok_or_else(|| missing(&server.id, handle))?;
            if r.version > version {
                return Err(ControlError::Failed(format!(
                    "{} is at version {}, past {version}",
                    server.id, r.version
                )));
            }
            r.length += late;
            // A late append of its own, under the lease at the version it leaves, may have
            // been acknowledged.
            let led = led.filter(|(v, _)| *v < version).map(|(v, bound)| {
                let acked_late = late > 0 && v == r.version;
                (v, if acked_late { r.length } else { bound })
            });
            r.version = version;
            if let Some(l) = led {
                s.led.insert(key, l);
            }
            Ok(Fenced {
                length: r.length,
                led,
                sealed: r.sealed,
            })
        });
        Box::pin(async move { r })
    }

    fn committed_length<'a>(
        &'a self,
        server: &'a ServerInfo,
        handle: u64,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, ControlError>> {
        let r = self.call(&server.id, Call::Length, |s| {
            Ok(s.replicas
                .get(&(server.id.clone(), handle))
                .filter(|r| r.version == version)
                .map(|r| r.length))
        });
        Box::pin(async move { r })
    }

    fn grant_lease<'a>(
        &'a self,
        server: &'a ServerInfo,
        lease: LeaseGrant,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        let r = self.call(&server.id, Call::Grant, |s| {
            let held = s.replicas.get(&(server.id.clone(), lease.handle));
            if held.is_none_or(|r| r.version != lease.version) {
                return Err(ControlError::Failed(format!(
                    "{} is not at version {}",
                    server.id, lease.version
                )));
            }
            s.led.remove(&(server.id.clone(), lease.handle));
            s.leases.push((server.id.clone(), lease));
            Ok(())
        });
        Box::pin(async move { r })
    }

    fn copy_chunk<'a>(
        &'a self,
        target: &'a ServerInfo,
        copy: ChunkCopy,
    ) -> BoxFuture<'a, Result<u64, ControlError>> {
        let r = self.call(&target.id, Call::Copy, |s| {
            let source_id = id_of(&copy.source);
            if s.down.contains(&source_id) {
                return Err(ControlError::Failed(format!("source {source_id} is down")));
            }
            let source = s
                .replicas
                .get(&(source_id.clone(), copy.handle))
                .copied()
                .filter(|r| r.version == copy.version)
                .ok_or_else(|| missing(&source_id, copy.handle))?;
            if let Some(&good) = s.rotten.get(&(source_id.clone(), copy.handle)) {
                // A catch-up appends what it read before the rot, as a chunkserver does.
                let key = (target.id.clone(), copy.handle);
                if let Some(mine) = s.replicas.get_mut(&key).filter(|r| {
                    copy.catch_up && r.version == copy.version && !r.sealed && r.length < good
                }) {
                    mine.length = good;
                }
                return Err(ControlError::DataLoss(format!(
                    "reading from {source_id}: checksum mismatch in chunk {}",
                    copy.handle
                )));
            }
            let length = copy.sealed_length.unwrap_or(source.length);
            if source.length < length {
                return Err(ControlError::DataLoss(format!(
                    "{source_id} holds {} of {length} bytes",
                    source.length
                )));
            }
            let key = (target.id.clone(), copy.handle);
            if copy.catch_up {
                let mine = s
                    .replicas
                    .get(&key)
                    .filter(|r| r.version == copy.version)
                    .ok_or_else(|| missing(&target.id, copy.handle))?;
                if mine.length > length {
                    return Err(ControlError::Failed("the target is longer".into()));
                }
                if mine.sealed {
                    return Err(ControlError::Failed(format!(
                        "replica sealed at {}",
                        mine.length
                    )));
                }
            }
            s.replicas.insert(
                key,
                Held {
                    version: copy.version,
                    length,
                    sealed: copy.sealed_length.is_some(),
                },
            );
            Ok(length)
        });
        Box::pin(async move { r })
    }

    fn seal<'a>(
        &'a self,
        server: &'a ServerInfo,
        handle: u64,
        version: u64,
        length: u64,
    ) -> BoxFuture<'a, Result<bool, ControlError>> {
        let r = self.call(&server.id, Call::Seal, |s| {
            let r = s
                .replicas
                .get_mut(&(server.id.clone(), handle))
                .ok_or_else(|| missing(&server.id, handle))?;
            if r.version != version {
                return Err(ControlError::Failed(format!(
                    "{} is at version {}, not {version}",
                    server.id, r.version
                )));
            }
            if r.length > length {
                return Err(ControlError::Failed(format!(
                    "{} holds {} bytes, past the seal at {length}",
                    server.id, r.length
                )));
            }
            if r.length < length {
                return Ok(false);
            }
            r.sealed = true;
            Ok(true)
        });
        Box::pin(async move { r })
    }
}
