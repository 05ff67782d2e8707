//! Leader-only authority: what serves clients and chunkservers exists only while this master
//! leads, one term at a time ([`Leading`], [`Gate`]).
//!
//! A single master leads from start to stop. A master of a replicated group takes up its
//! duties when Raft makes it leader, as a restarted master would: a fresh membership table
//! (chunkservers register again, told to by their first heartbeat), the leases the log names
//! asked of their holders before any new grant (`ChunkManager::load_unsettled`), its own
//! background loops. It drops them the moment Raft says it no longer leads: the services
//! answer `NotLeader` (UNAVAILABLE naming the leader) from then on, and the loops stop. A
//! deposed leader that has not heard yet (paused, cut off) cannot grant a lease that matters:
//! a grant logs the new version first, which needs a majority of masters, and chunkservers
//! follow the leader and heartbeat to it alone. What a term's services hold is never reused
//! by a later term.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use gfs_proto::v1::admin_server::AdminServer;
use gfs_proto::v1::master_control_server::MasterControlServer;
use gfs_proto::v1::master_server::MasterServer;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::{Service, ServiceExt};

use crate::chunks::ChunkManager;
use crate::error::MasterError;
use crate::service::{AdminService, ControlService, MasterService};

/// What serves while this master leads, for one term.
pub(crate) struct Term {
    /// Namespace and chunk calls of clients.
    pub(crate) master: MasterServer<MasterService>,
    /// Registrations and heartbeats of chunkservers.
    pub(crate) control: MasterControlServer<ControlService>,
    /// Operators' calls.
    pub(crate) admin: AdminServer<AdminService>,
    /// The chunk manager of this term.
    pub(crate) chunks: Arc<ChunkManager>,
    /// Stops this term's background loops.
    pub(crate) stop: CancellationToken,
    /// The background loops, which end once `stop` is cancelled.
    pub(crate) loops: Vec<tokio::task::JoinHandle<()>>,
}

/// The term this master leads now, if any, and where the leader is otherwise.
#[derive(Clone)]
pub(crate) struct Leading {
    term: Arc<RwLock<Option<Term>>>,
    leader: Arc<dyn Fn() -> Option<String> + Send + Sync>,
}

impl Leading {
    /// Nothing led yet; `leader` names the leader's address when another master leads.
    pub(crate) fn new(leader: Arc<dyn Fn() -> Option<String> + Send + Sync>) -> Leading {
        Leading {
            term: Arc::default(),
            leader,
        }
    }

    /// Starts serving `term`.
    pub(crate) fn begin(&self, term: Term) {
        *self.term.write() = Some(term);
    }

    /// Stops serving the current term, if any, and its background loops; returns the term, so
    /// that a caller can wait for its loops to end.
    pub(crate) fn end(&self) -> Option<Term> {
        let term = self.term.write().take();
        if let Some(t) = &term {
            t.stop.cancel();
        }
        term
    }

    /// The current term's chunk manager, while this master leads.
    pub(crate) fn chunks(&self) -> Option<Arc<ChunkManager>> {
        self.term.read().as_ref().map(|t| Arc::clone(&t.chunks))
    }

    /// Whether this master serves a term now.
    pub(crate) fn leads(&self) -> bool {
        self.term.read().is_some()
    }

    /// The refusal of a master that does not lead, naming the leader if known.
    pub(crate) fn not_leader(&self) -> MasterError {
        MasterError::NotLeader {
            leader: (self.leader)(),
        }
    }

    /// `pick`'s service of the current term, or `NotLeader` for every call.
    pub(crate) fn gate<S>(&self, pick: fn(&Term) -> S) -> Gate<S> {
        Gate {
            leading: self.clone(),
            pick,
            stale: None,
        }
    }
}

/// Whether `req` is a namespace read its caller allows to be stale.
fn stale_read(req: &http::Request<Body>) -> bool {
    let path = req.uri().path();
    req.headers().contains_key(gfs_host::STALE_HEADER)
        && (path.ends_with("/List") || path.ends_with("/Stat"))
}

/// A gRPC service served only while this master leads; otherwise every call is refused with
/// `NotLeader`.
pub(crate) struct Gate<S> {
    leading: Leading,
    pick: fn(&Term) -> S,
    /// Answers the namespace reads allowed to be stale while this master does not lead.
    stale: Option<S>,
}

impl<S> Gate<S> {
    /// This gate, answering the namespace reads a caller allows to be stale with `follower`
    /// while this master does not lead.
    pub(crate) fn with_stale_reads(mut self, follower: S) -> Gate<S> {
        self.stale = Some(follower);
        self
    }
}

impl<S: Clone> Clone for Gate<S> {
    fn clone(&self) -> Self {
        Gate {
            leading: self.leading.clone(),
            pick: self.pick,
            stale: self.stale.clone(),
        }
    }
}

impl<S: NamedService> NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Gate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let service = self.leading.term.read().as_ref().map(self.pick);
        let service = match (service, &self.stale) {
            (None, Some(follower)) if stale_read(&req) => Some(follower.clone()),
            (s, _) => s,
        };
        match service {
            Some(s) => Box::pin(s.oneshot(req)),
            None => {
                let refusal = crate::service::status(self.leading.not_leader());
                Box::pin(async move { Ok(refusal.into_http()) })
            }
        }
    }
}
