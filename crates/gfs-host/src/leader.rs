//! A gRPC channel to a group of masters that follows their leader ([`Masters`]).
//!
//! Every call goes to the master believed to lead. A master that does not lead answers
//! UNAVAILABLE with [`LEADER_HEADER`] (the leader's address, or empty when it knows none); a
//! master that cannot be reached fails at the transport. Either way the channel moves its
//! belief (to the named leader, else to the next master in the list) and hands the failure to
//! the caller, whose retry (every caller of a master retries UNAVAILABLE) then reaches the
//! leader: the request is never replayed here, so nothing is sent twice behind the caller's
//! back. One master in the list is a plain channel to it, its failures as they are.
//!
//! A master that failed at the transport is *suspect* for [`SUSPECT_FOR`]: until then a
//! refusal naming it as the leader is taken as naming none (the caller pauses as during an
//! election, and the belief moves to another master), because the masters that name it have
//! not yet noticed that it is gone. Without this a killed leader's address, named by the
//! followers until they elect another, costs every caller a whole connect timeout (a vanished
//! host does not refuse connections: its packets go unanswered). A suspicion ends early when
//! a master names another leader or the suspect answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;
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

/// How long a master that failed at the transport is not taken for the leader on another
/// master's word: longer than an election with the default timing (1.5 to 2 s after the last
/// heartbeat), so that the followers name the new leader before it ends.
pub const SUSPECT_FOR: Duration = Duration::from_secs(5);

/// A group's channels connect within this at most, whatever the endpoint says: a master that
/// does not answer is as likely gone as slow, and another one of the group can answer instead
/// (a TCP connect within a site takes well under a millisecond; the first SYN is sent again
/// only after a second).
pub const GROUP_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A group's connections are pinged this often...
pub const GROUP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// ...and closed when a ping goes unanswered this long: a leader cut off the network is left
/// within 3 s (the others elect a new one within about 2 s), where every connection's
/// [`crate::KEEPALIVE_INTERVAL`] and [`crate::KEEPALIVE_TIMEOUT`] took up to 10 s.
pub const GROUP_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Until when each master is suspect (it failed at the transport).
    suspect: Mutex<Vec<Option<Instant>>>,
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
    /// settings on `net` (for a group, with [`GROUP_CONNECT_TIMEOUT`] and the group's
    /// keepalive), connecting when first used.
    pub fn new(
        net: &Net,
        addrs: &[String],
        endpoint: impl Fn(&str) -> Result<Endpoint, tonic::transport::Error>,
    ) -> Result<Masters, tonic::transport::Error> {
        assert!(!addrs.is_empty(), "a group of masters needs one address");
        let group = addrs.len() > 1;
        let channels = addrs
            .iter()
            .map(|a| {
                let mut e = endpoint(a)?;
                if group {
                    e = e
                        .connect_timeout(GROUP_CONNECT_TIMEOUT)
                        .http2_keep_alive_interval(GROUP_KEEPALIVE_INTERVAL)
                        .keep_alive_timeout(GROUP_KEEPALIVE_TIMEOUT);
                }
                Ok(net.channel(&e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Masters {
            shared: Arc::new(Shared {
                addrs: addrs.to_vec(),
                suspect: Mutex::new(vec![None; addrs.len()]),
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

    /// The position of the master at `addr` in the group.
    fn index_of(&self, addr: &str) -> Option<usize> {
        self.shared.addrs.iter().position(|a| a == addr)
    }

    /// Whether master `i` failed at the transport less than [`SUSPECT_FOR`] ago.
    fn is_suspect(&self, i: usize) -> bool {
        self.shared.suspect.lock()[i].is_some_and(|until| Instant::now() < until)
    }

    /// Notes that master `i` answered (`reached`) or failed at the transport (`!reached`).
    fn note_reached(&self, i: usize, reached: bool) {
        let mut suspect = self.shared.suspect.lock();
        if reached {
            suspect[i] = None;
        } else {
            suspect[i] = Some(Instant::now() + SUSPECT_FOR);
            tracing::info!(master = %self.shared.addrs[i], "master unreachable: not taken for the leader for a while");
        }
    }

    /// The index of the master `hint` names, if it is one of the group and not suspect; a
    /// hint naming another master than a suspect ends that master's suspicion (a leader was
    /// elected since).
    fn trusted_hint(&self, hint: Option<&str>) -> Option<usize> {
        let named = self.index_of(hint?)?;
        if self.is_suspect(named) {
            return None;
        }
        let mut suspect = self.shared.suspect.lock();
        for (i, s) in suspect.iter_mut().enumerate() {
            if i != named {
                *s = None;
            }
        }
        Some(named)
    }

    /// Moves the belief away from master `seen` after a failure there: to `hint` if it names
    /// a master of the group that is not suspect, else to the next master not suspect (the
    /// next one when all are). A belief another call moved already stays.
    fn moved(&self, seen: usize, hint: Option<&str>) {
        let s = &self.shared;
        if s.addrs.len() == 1 {
            return;
        }
        let n = s.addrs.len();
        let next = self.trusted_hint(hint).unwrap_or_else(|| {
            (1..n)
                .map(|k| (seen + k) % n)
                .find(|&i| !self.is_suspect(i))
                .unwrap_or((seen + 1) % n)
        });
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

/// Whether `e` (a transport failure) shows that the request was never sent: no connection to
/// the master could be made (refused, timed out, no route, a failed TLS handshake).
fn never_sent(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<tonic::ConnectError>() {
            return true;
        }
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
        let mut s = tonic::Status::unavailable(format!("master {addr} cannot be reached: {e}"));
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
            let group = this.shared.addrs.len() > 1;
            match channel.ready_oneshot().await {
                Ok(mut ch) => match ch.call(req).await {
                    Ok(mut resp) => {
                        if group {
                            this.note_reached(seen, true);
                        }
                        if let Some(hint) = redirect(resp.headers()) {
                            let named = hint.and_then(|h| this.index_of(h));
                            this.moved(seen, hint);
                            if named.is_some_and(|i| this.is_suspect(i)) {
                                // Its namer has not noticed that it is gone: to the caller,
                                // no leader is known yet.
                                resp.headers_mut()
                                    .insert(LEADER_HEADER, http::HeaderValue::from_static(""));
                            }
                        }
                        Ok(resp)
                    }
                    Err(e) => {
                        if group {
                            this.note_reached(seen, false);
                        }
                        this.moved(seen, None);
                        Err(failed(
                            &this.shared.addrs[seen],
                            this.shared.addrs.len() > 1,
                            e,
                        ))
                    }
                },
                Err(e) => {
                    if group {
                        this.note_reached(seen, false);
                    }
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

    /// A master that refuses every call, naming `leader` as the one to ask.
    #[derive(Clone)]
    struct Naming {
        leader: &'static str,
    }

    impl tonic::server::NamedService for Naming {
        const NAME: &'static str = "x.Y";
    }

    impl Service<http::Request<Body>> for Naming {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = futures::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            let mut s = tonic::Status::unavailable("not the leader");
            s.metadata_mut().insert(
                LEADER_HEADER,
                tonic::metadata::MetadataValue::from_static(self.leader),
            );
            futures::future::ready(Ok(s.into_http()))
        }
    }

    /// Serves [`Naming`] on a free port of this host; returns its address.
    async fn naming(leader: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(Naming { leader })
                .serve_with_incoming(incoming),
        );
        addr
    }

    fn request(addr: &str) -> http::Request<Body> {
        http::Request::builder()
            .uri(format!("http://{addr}/x.Y/Z"))
            .body(Body::empty())
            .unwrap()
    }

    /// The leader named by a refusal the caller got.
    fn named(e: BoxError) -> String {
        let status = e.downcast::<tonic::Status>().expect("a status");
        assert!(redirected(&status), "{status}");
        let v = status.metadata().get(LEADER_HEADER).unwrap();
        v.to_str().unwrap().to_string()
    }

    /// A killed leader's host answers nothing while the followers still name it: its address
    /// must not cost every caller a connect timeout again (the compose cluster's failover took
    /// 5.4 s so, against 4.1 s on loopback).
    #[tokio::test]
    async fn a_master_that_cannot_be_reached_is_not_taken_for_the_leader_on_another_s_word() {
        // TEST-NET-1: nothing answers there (a timeout, or no route at all).
        const GONE: &str = "192.0.2.1:9000";
        let (b, c) = (naming(GONE).await, naming("").await);
        let addrs = vec![GONE.to_string(), b.clone(), c.clone()];
        let mut m = Masters::new(&Net::os(), &addrs, |a| {
            crate::endpoint(a).map(|e| e.connect_timeout(Duration::from_millis(300)))
        })
        .unwrap();
        // A connection that could not be made sent nothing: the caller may send it again.
        let e = m.call(request(GONE)).await.unwrap_err();
        assert_eq!(named(e), "");
        assert_eq!(m.leader(), b);
        // b names the master just found unreachable: to the caller that is no leader yet,
        // and the belief goes on to c, not back.
        let resp = m.call(request(&b)).await.unwrap();
        let status = tonic::Status::from_header_map(resp.headers()).expect("a refusal");
        assert_eq!(status.metadata().get(LEADER_HEADER).unwrap(), "");
        assert_eq!(m.leader(), c);
        // Once a master names another leader, the suspicion ends.
        assert_eq!(m.trusted_hint(Some(&b)), Some(1));
        assert!(!m.is_suspect(0));
        assert_eq!(m.trusted_hint(Some(GONE)), Some(0));
    }

    #[tokio::test]
    async fn a_suspect_master_is_trusted_again_after_a_while() {
        tokio::time::pause();
        let addrs = master_list("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3");
        let m = Masters::new(&Net::os(), &addrs, crate::endpoint).unwrap();
        m.note_reached(0, false);
        m.moved(0, None);
        assert_eq!(m.leader(), "127.0.0.1:2");
        m.moved(1, Some("127.0.0.1:1"));
        assert_eq!(m.leader(), "127.0.0.1:3", "a suspect is skipped");
        tokio::time::advance(SUSPECT_FOR).await;
        m.moved(2, Some("127.0.0.1:1"));
        assert_eq!(m.leader(), "127.0.0.1:1");
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
