//! A gRPC channel to a group of masters that follows their leader ([`Masters`]).
//!
//! Every call goes to the master believed to lead. A master that does not lead answers
//! UNAVAILABLE with [`LEADER_HEADER`] (the leader's address, or empty when it knows none); a
//! master that cannot be reached fails at the transport. Either way the channel moves its
//! belief (to the named leader, else to the next master in the list) and hands the failure to
//! the caller, whose retry (every caller of a master retries UNAVAILABLE) then reaches the
//! leader: the request is never replayed here, so nothing is sent twice behind the caller's
//! back. One master in the list is a plain channel to it, its failures as they are.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::{Service, ServiceExt};

use crate::Net;

/// The metadata key of an UNAVAILABLE answer from a master that does not lead: the leader's
/// address, for the caller to ask instead (empty: no leader is known yet).
pub const LEADER_HEADER: &str = "gfs-leader";

/// The metadata key of a namespace read (list, stat) that any master of a group may answer
/// from its own state, which may lag the leader's by what it has not yet applied.
pub const STALE_HEADER: &str = "gfs-stale-ok";

/// Splits a list of master addresses (`a:9000,b:9000`, spaces allowed) into its entries.
pub fn master_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A channel to the leader of a group of masters; cheap to clone (clones share the belief).
#[derive(Clone)]
pub struct Masters {
    shared: Arc<Shared>,
}

struct Shared {
    addrs: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
}

impl std::fmt::Debug for Masters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masters")
            .field("addrs", &self.shared.addrs)
            .field("leader", &self.leader())
            .finish()
    }
}

impl Masters {
    /// A channel to the masters at `addrs` (at least one), each reached through `endpoint`'s
    /// settings on `net`, connecting when first used.
    pub fn new(
        net: &Net,
        addrs: &[String],
        endpoint: impl Fn(&str) -> Result<Endpoint, tonic::transport::Error>,
    ) -> Result<Masters, tonic::transport::Error> {
        assert!(!addrs.is_empty(), "a group of masters needs one address");
        let channels = addrs
            .iter()
            .map(|a| Ok(net.channel(&endpoint(a)?)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Masters {
            shared: Arc::new(Shared {
                addrs: addrs.to_vec(),
                channels,
                current: AtomicUsize::new(0),
            }),
        })
    }

    /// The address of the master believed to lead.
    pub fn leader(&self) -> &str {
        &self.shared.addrs[self.shared.current.load(Ordering::Acquire)]
    }

    /// Every master's address, in the configured order.
    pub fn addrs(&self) -> &[String] {
        &self.shared.addrs
    }

    /// Moves the belief away from master `seen` after a failure there: to `hint` if it names
    /// a master of the group, else to the next one. A belief another call moved already stays.
    fn moved(&self, seen: usize, hint: Option<&str>) {
        let s = &self.shared;
        if s.addrs.len() == 1 {
            return;
        }
        let next = hint
            .and_then(|h| s.addrs.iter().position(|a| a == h))
            .unwrap_or((seen + 1) % s.addrs.len());
        if s.current
            .compare_exchange(seen, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && next != seen
        {
            tracing::info!(from = %s.addrs[seen], to = %s.addrs[next], "following the master leader");
        }
    }
}

/// The leader named by a response's headers: `Some(None)` for a master that does not lead and
/// knows no leader, None for any other response.
fn redirect(headers: &http::HeaderMap) -> Option<Option<&str>> {
    let v = headers.get(LEADER_HEADER)?;
    Some(v.to_str().ok().filter(|s| !s.is_empty()))
}

/// Whether `status` refuses a call that no master carried out: a master that does not lead
/// refused it, or none could be reached to send it. Such a call can be sent again, to the
/// leader, even if it is not idempotent.
pub fn redirected(status: &tonic::Status) -> bool {
    status.metadata().get(LEADER_HEADER).is_some()
}

/// Whether `e` (a transport failure) shows that the request was never sent: the connection
/// to the master was refused.
fn never_sent(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The failure of a call to `addr` that failed at the transport: for a request never sent to
/// a master of a group, an UNAVAILABLE that [`redirected`] recognises (a single master's
/// callers see the transport failure as it is).
fn failed(addr: &str, group: bool, e: tonic::transport::Error) -> BoxError {
    if group && never_sent(&e) {
        let mut s =
            tonic::Status::unavailable(format!("master {addr} refused the connection: {e}"));
        s.metadata_mut().insert(
            LEADER_HEADER,
            tonic::metadata::MetadataValue::from_static(""),
        );
        Box::new(s)
    } else {
        Box::new(e)
    }
}

/// A boxed error, as tonic's clients take from their transport.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<http::Request<Body>> for Masters {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the chosen channel's, awaited in the call: which one is chosen then.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let seen = this.shared.current.load(Ordering::Acquire);
            let channel = this.shared.channels[seen].clone();
            match channel.ready_oneshot().await {
                Ok(mut ch) => match ch.call(req).await {
                    Ok(resp) => {
                        if let Some(hint) = redirect(resp.headers()) {
                            this.moved(seen, hint);
                        }
                        Ok(resp)
                    }
                    Err(e) => {
                        this.moved(seen, None);
                        Err(failed(
                            &this.shared.addrs[seen],
                            this.shared.addrs.len() > 1,
                            e,
                        ))
                    }
                },
                Err(e) => {
                    this.moved(seen, None);
                    Err(failed(
                        &this.shared.addrs[seen],
                        this.shared.addrs.len() > 1,
                        e,
                    ))
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_masters_is_split_on_commas() {
        assert_eq!(
            master_list(" a:1, b:2 ,,c:3 "),
            vec!["a:1".to_string(), "b:2".into(), "c:3".into()]
        );
        assert!(master_list("").is_empty());
    }

    #[tokio::test]
    async fn the_belief_follows_hints_and_else_moves_round_robin() {
        let addrs = master_list("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3");
        let m = Masters::new(&Net::os(), &addrs, crate::endpoint).unwrap();
        assert_eq!(m.leader(), "127.0.0.1:1");
        m.moved(0, Some("127.0.0.1:3"));
        assert_eq!(m.leader(), "127.0.0.1:3");
        // A failure seen at a master the belief has left already moves nothing.
        m.moved(0, None);
        assert_eq!(m.leader(), "127.0.0.1:3");
        m.moved(2, Some("elsewhere:9"));
        assert_eq!(m.leader(), "127.0.0.1:1");
        m.moved(0, None);
        assert_eq!(m.leader(), "127.0.0.1:2");
    }

    #[tokio::test]
    async fn an_unreachable_master_moves_the_belief_to_the_next() {
        // Two ports nothing listens on.
        let free = |_| std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (a, b) = (free(0), free(1));
        let addrs = vec![
            a.local_addr().unwrap().to_string(),
            b.local_addr().unwrap().to_string(),
        ];
        drop((a, b));
        let mut m = Masters::new(&Net::os(), &addrs, crate::endpoint).unwrap();
        let req = http::Request::builder()
            .uri(format!("http://{}/x.Y/Z", addrs[0]))
            .body(Body::empty())
            .unwrap();
        let e = m.call(req).await.unwrap_err();
        let status = e
            .downcast::<tonic::Status>()
            .expect("a refused connection is a status");
        assert!(redirected(&status), "{status}");
        assert_eq!(m.leader(), addrs[1]);
    }
}
