//! Cues: what the production code logs that an aimed fault waits for, taken from its tracing
//! events as they happen (the master granting a lease, a primary sealing a chunk, a primary
//! finding a secondary lagging, a primary left alone with an append it committed, the master
//! about to fence the replicas it relegates to). The nemesis aims at the roles these name (the primary of the
//! newest lease, its secondaries) and strikes at these moments: the interleavings the
//! replication review found (a seal report lost while a secondary lags, a version change
//! racing an old primary, a relegation under load) are then a few seeds away, not thousands.
//!
//! Only the events below reach the layer ([`layer`] is interested in no other callsite),
//! and it runs on the simulation's one thread, in the order the events happen: a seed still
//! replays exactly.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber, span};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The lease the master last granted on a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The chunk.
    pub handle: u64,
    /// The primary's host.
    pub primary: String,
    /// The secondaries' hosts.
    pub secondaries: Vec<String>,
}

/// A moment an aimed fault may strike at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cue {
    /// A primary sealed a chunk and is about to report it to the master.
    Sealed {
        /// The chunk.
        handle: u64,
    },
    /// A primary found a secondary lagging and will report it (a relegation follows).
    Lagging {
        /// The chunk.
        handle: u64,
        /// The lagging secondary's host.
        peer: String,
    },
    /// The master measured the lengths of a chunk's good replicas to relegate a lagging one,
    /// and is about to fence them with a new version.
    Measured {
        /// The chunk.
        handle: u64,
    },
    /// The master is about to fence a chunk's replicas with a new version (a lease decision,
    /// a relegation, a seal of its own).
    Fencing {
        /// The chunk.
        handle: u64,
    },
    /// A replica is about to change its version (a fence): until the change is durable, a
    /// PREPARE at the old version must be refused there (finding 5).
    VersionChanging {
        /// The chunk.
        handle: u64,
        /// The replica's host.
        host: String,
    },
    /// A primary committed an append that fewer than a quorum did: a tail only it holds,
    /// which no reader may be shown (a later lease may write other bytes there).
    PrimaryOnly {
        /// The chunk.
        handle: u64,
    },
}

#[derive(Default)]
struct State {
    leases: BTreeMap<u64, Lease>,
    newest: Option<u64>,
    pending: Vec<Cue>,
}

/// The cues of one run, shared by the layer and the nemesis.
#[derive(Clone, Default)]
pub struct Cues(Arc<Mutex<State>>);

impl Cues {
    /// The lease granted last, on any chunk.
    pub fn newest(&self) -> Option<Lease> {
        let st = self.0.lock();
        st.newest.and_then(|h| st.leases.get(&h).cloned())
    }

    /// The lease last granted on `handle`.
    pub fn lease(&self, handle: u64) -> Option<Lease> {
        self.0.lock().leases.get(&handle).cloned()
    }

    /// The cues since the last call, in order.
    pub fn take(&self) -> Vec<Cue> {
        std::mem::take(&mut self.0.lock().pending)
    }

    fn granted(&self, lease: Lease) {
        let mut st = self.0.lock();
        st.newest = Some(lease.handle);
        st.leases.insert(lease.handle, lease);
    }

    fn cue(&self, cue: Cue) {
        let mut st = self.0.lock();
        // Bounded: the nemesis takes them every step.
        if st.pending.len() < 1024 {
            st.pending.push(cue);
        }
    }
}

/// The tracing layer that turns the events cues come from into `cues`; it sees no other
/// event or span.
pub fn layer<S>(cues: Cues) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    CueLayer(cues).with_filter(filter_fn(wanted))
}

struct CueLayer(Cues);

const GRANTED: (&str, &str) = ("gfs_master::chunks::lease", "lease granted");
const SEALED: (&str, &str) = ("gfs_replication::primary::seal", "chunk sealed");
const LAGGING: (&str, &str) = ("gfs_replication::primary", "secondary is lagging");
const MEASURED: (&str, &str) = ("gfs_master::chunks::lease", "lengths known");
const PRIMARY_ONLY: (&str, &str) = ("gfs_replication::primary", "durable quorum not reached");
const VERSION_CHANGING: (&str, &str) = ("gfs_chunkserver::control", "changing the version");
const FENCING: (&str, &str) = ("gfs_master::chunks::version", "fencing the replicas");

/// turmoil's span around everything a host runs; its `name` field is the host's.
const NODE_SPAN: &str = "node";

fn wanted(m: &Metadata<'_>) -> bool {
    m.is_event()
        && [
            GRANTED,
            SEALED,
            LAGGING,
            PRIMARY_ONLY,
            MEASURED,
            VERSION_CHANGING,
            FENCING,
        ]
        .iter()
        .any(|(t, _)| m.target() == *t)
        || m.is_span() && m.name() == NODE_SPAN
}

/// The host a [`NODE_SPAN`] is for, kept in the span's extensions.
struct Host(String);

#[derive(Default)]
struct Fields {
    message: String,
    handle: Option<u64>,
    primary: String,
    secondaries: String,
    peer: String,
    name: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            "handle" => self.handle = text.parse().ok(),
            "primary" => self.primary = text,
            "secondaries" => self.secondaries = text,
            "peer" => self.peer = text,
            "name" => self.name = text.trim_matches('"').to_string(),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "handle" {
            self.handle = Some(value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for CueLayer {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != NODE_SPAN {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Host(f.name));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let Some(handle) = f.handle else { return };
        let target = event.metadata().target();
        if (target, f.message.as_str()) == VERSION_CHANGING {
            let host = ctx.event_scope(event).and_then(|scope| {
                scope
                    .into_iter()
                    .find_map(|s| s.extensions().get::<Host>().map(|h| h.0.clone()))
            });
            if let Some(host) = host {
                self.0.cue(Cue::VersionChanging { handle, host });
            }
            return;
        }
        if (target, f.message.as_str()) == GRANTED {
            let secondaries = f
                .secondaries
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            self.0.granted(Lease {
                handle,
                primary: f.primary,
                secondaries,
            });
        } else if (target, f.message.as_str()) == SEALED {
            self.0.cue(Cue::Sealed { handle });
        } else if (target, f.message.as_str()) == LAGGING {
            // A replication address, `host:port`.
            let peer = f.peer.trim_matches('"');
            let host = peer.rsplit_once(':').map_or(peer, |(h, _)| h);
            self.0.cue(Cue::Lagging {
                handle,
                peer: host.to_string(),
            });
        } else if (target, f.message.as_str()) == FENCING {
            self.0.cue(Cue::Fencing { handle });
        } else if (target, f.message.as_str()) == MEASURED {
            self.0.cue(Cue::Measured { handle });
        } else if (target, f.message.as_str()) == PRIMARY_ONLY {
            self.0.cue(Cue::PrimaryOnly { handle });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn the_layer_takes_leases_and_cues_from_the_events_it_wants() {
        let cues = Cues::default();
        let subscriber = tracing_subscriber::registry().with(layer(cues.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "gfs_master::chunks::lease", handle = 7u64, version = 3, primary = "cs2", secondaries = "cs1,cs4", "lease granted");
            tracing::info!(target: "gfs_replication::primary::seal", handle = %7u64, length = 9, sealed_on = 3, "chunk sealed");
            tracing::warn!(target: "gfs_replication::primary", handle = %7u64, peer = "cs1:8081", "secondary is lagging");
            tracing::warn!(target: "gfs_replication::primary", handle = %7u64, op = 3, durable = 1, need = 2, "durable quorum not reached");
            tracing::debug!(target: "gfs_master::chunks::lease", handle = %7u64, longest = 2, "lengths known");
            tracing::debug!(target: "gfs_master::chunks::version", handle = %7u64, version = 3, replicas = 2, "fencing the replicas");
            tracing::warn!(target: "gfs_replication::primary", handle = %7u64, "something else");
            tracing::info!(target: "gfs_master::other", handle = 8u64, primary = "cs3", "lease granted");
        });
        let want = Lease {
            handle: 7,
            primary: "cs2".into(),
            secondaries: vec!["cs1".into(), "cs4".into()],
        };
        assert_eq!(cues.newest(), Some(want.clone()));
        assert_eq!(cues.lease(7), Some(want));
        assert_eq!(cues.lease(8), None, "another target is not a cue");
        assert_eq!(
            cues.take(),
            vec![
                Cue::Sealed { handle: 7 },
                Cue::Lagging {
                    handle: 7,
                    peer: "cs1".into()
                },
                Cue::PrimaryOnly { handle: 7 },
                Cue::Measured { handle: 7 },
                Cue::Fencing { handle: 7 }
            ]
        );
        assert!(cues.take().is_empty());
    }

    /// A replica's version change is a cue with the host of turmoil's `node` span around it.
    #[test]
    fn a_version_change_names_the_host_it_runs_on() {
        let cues = Cues::default();
        let subscriber = tracing_subscriber::registry().with(layer(cues.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let node = tracing::info_span!("node", name = "cs3");
            let _in_node = node.enter();
            let rpc = tracing::info_span!("rpc", method = "ChunkControl/SetVersion");
            let _in_rpc = rpc.enter();
            tracing::debug!(target: "gfs_chunkserver::control", handle = %7u64, version = 4, "changing the version");
        });
        assert_eq!(
            cues.take(),
            vec![Cue::VersionChanging {
                handle: 7,
                host: "cs3".into()
            }]
        );
    }
}
