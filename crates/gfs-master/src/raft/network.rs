//! The Raft RPCs between masters over gRPC (`MasterRaft` in `proto/gfs.proto`): [`RaftNet`]
//! connects a master's Raft to the others, [`RaftService`] serves theirs. Entries and snapshot
//! metadata travel in the master's own log encoding (`super::codec`); every call carries
//! openraft's deadline; messages are bounded by `gfs_proto::MAX_MESSAGE` (openraft sends at
//! most 300 entries and 3 MiB of snapshot per call by default).

use std::time::Duration;

use gfs_proto::v1::master_raft_client::MasterRaftClient;
use gfs_proto::v1::master_raft_server::MasterRaft;
use gfs_proto::v1::{
    RaftAppendReply, RaftAppendRequest, RaftLogId, RaftLogIdOrNone, RaftSnapshotReply,
    RaftSnapshotRequest, RaftVote, RaftVoteReply, RaftVoteRequest, raft_append_reply,
};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, SnapshotMismatch,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, Entry, LeaderId, LogId, SnapshotSegmentId, Vote};
use prost::Message;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::codec::{EntryRecord, SnapshotRecord};
use super::{MasterNode, TypeConfig};

/// How long a connection to another master may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn log_id_to_wire(id: &LogId<u64>) -> RaftLogId {
    RaftLogId {
        term: id.leader_id.term,
        node_id: id.leader_id.node_id,
        index: id.index,
    }
}

fn log_id_from_wire(id: &RaftLogId) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(id.term, id.node_id), id.index)
}

fn vote_to_wire(v: &Vote<u64>) -> RaftVote {
    RaftVote {
        term: v.leader_id.term,
        node_id: v.leader_id.node_id,
        committed: v.committed,
    }
}

fn vote_from_wire(v: Option<&RaftVote>) -> Result<Vote<u64>, String> {
    let v = v.ok_or("a message without a vote")?;
    Ok(Vote {
        leader_id: LeaderId::new(v.term, v.node_id),
        committed: v.committed,
    })
}

/// The wire form of an AppendEntries call.
fn append_to_wire(rpc: &AppendEntriesRequest<TypeConfig>) -> RaftAppendRequest {
    RaftAppendRequest {
        vote: Some(vote_to_wire(&rpc.vote)),
        prev_log_id: rpc.prev_log_id.as_ref().map(log_id_to_wire),
        entries: rpc
            .entries
            .iter()
            .map(|e| EntryRecord::from(e).encode_to_vec().into())
            .collect(),
        leader_commit: rpc.leader_commit.as_ref().map(log_id_to_wire),
    }
}

/// An AppendEntries call from its wire form.
fn append_from_wire(r: &RaftAppendRequest) -> Result<AppendEntriesRequest<TypeConfig>, String> {
    let entries = r
        .entries
        .iter()
        .map(|b| {
            let rec = EntryRecord::decode(b.as_ref()).map_err(|e| format!("an entry: {e}"))?;
            Entry::<TypeConfig>::try_from(&rec)
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(AppendEntriesRequest {
        vote: vote_from_wire(r.vote.as_ref())?,
        prev_log_id: r.prev_log_id.as_ref().map(log_id_from_wire),
        entries,
        leader_commit: r.leader_commit.as_ref().map(log_id_from_wire),
    })
}

fn append_reply_to_wire(resp: &AppendEntriesResponse<u64>) -> RaftAppendReply {
    use raft_append_reply::Result as R;
    let result = match resp {
        AppendEntriesResponse::Success => R::Success(true),
        AppendEntriesResponse::PartialSuccess(id) => R::PartialSuccess(RaftLogIdOrNone {
            log_id: id.as_ref().map(log_id_to_wire),
        }),
        AppendEntriesResponse::Conflict => R::Conflict(true),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to_wire(v)),
    };
    RaftAppendReply {
        result: Some(result),
    }
}

fn append_reply_from_wire(r: &RaftAppendReply) -> Result<AppendEntriesResponse<u64>, String> {
    use raft_append_reply::Result as R;
    Ok(
        match r.result.as_ref().ok_or("an empty AppendEntries reply")? {
            R::Success(_) => AppendEntriesResponse::Success,
            R::PartialSuccess(p) => {
                AppendEntriesResponse::PartialSuccess(p.log_id.as_ref().map(log_id_from_wire))
            }
            R::Conflict(_) => AppendEntriesResponse::Conflict,
            R::HigherVote(v) => AppendEntriesResponse::HigherVote(vote_from_wire(Some(v))?),
        },
    )
}

/// Connects a master's Raft to the other masters over `net` (the operating system's or the
/// simulator's, with the master's TLS identity).
#[derive(Clone)]
pub struct RaftNet {
    net: gfs_host::Net,
}

impl RaftNet {
    /// Connections over `net`.
    pub fn new(net: gfs_host::Net) -> RaftNet {
        RaftNet { net }
    }
}

/// One other master, as this master's Raft reaches it.
pub struct Peer {
    target: u64,
    addr: String,
    client: Result<MasterRaftClient<Channel>, String>,
}

impl RaftNetworkFactory<TypeConfig> for RaftNet {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &MasterNode) -> Peer {
        let client = self
            .net
            .endpoint(&node.addr)
            .map(|e| {
                let channel = self.net.channel(&e.connect_timeout(CONNECT_TIMEOUT));
                MasterRaftClient::new(channel)
                    .max_decoding_message_size(gfs_proto::MAX_MESSAGE)
                    .max_encoding_message_size(gfs_proto::MAX_MESSAGE)
            })
            .map_err(|e| format!("master {target} at {:?}: {e}", node.addr));
        Peer {
            target,
            addr: node.addr.clone(),
            client,
        }
    }
}

/// A failed call as openraft takes it: an unreachable master is backed off from, any other
/// failure retried.
fn rpc_error<E: std::error::Error>(s: Status) -> RPCError<u64, MasterNode, E> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
            RPCError::Unreachable(Unreachable::new(&s))
        }
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

fn bad_reply<E: std::error::Error>(why: String) -> RPCError<u64, MasterNode, E> {
    RPCError::Network(NetworkError::new(&Status::internal(why)))
}

impl Peer {
    /// The client, and `msg` as a request with openraft's deadline.
    fn call<T>(
        &self,
        msg: T,
        option: &RPCOption,
    ) -> Result<(MasterRaftClient<Channel>, Request<T>), Status> {
        let client = self.client.clone().map_err(Status::unavailable)?;
        let mut req = Request::new(msg);
        req.set_timeout(option.hard_ttl());
        Ok((client, req))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, MasterNode, RaftError<u64>>> {
        let (mut client, req) = self
            .call(append_to_wire(&rpc), &option)
            .map_err(rpc_error)?;
        let reply = client.append_entries(req).await.map_err(rpc_error)?;
        append_reply_from_wire(&reply.into_inner()).map_err(bad_reply)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, MasterNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let msg = RaftSnapshotRequest {
            vote: Some(vote_to_wire(&rpc.vote)),
            meta: SnapshotRecord::from(&rpc.meta).encode_to_vec().into(),
            offset: rpc.offset,
            data: rpc.data.into(),
            done: rpc.done,
        };
        let (mut client, req) = self.call(msg, &option).map_err(rpc_error)?;
        let reply = client
            .install_snapshot(req)
            .await
            .map_err(rpc_error)?
            .into_inner();
        if reply.mismatch {
            let mismatch = SnapshotMismatch {
                expect: SnapshotSegmentId {
                    id: reply.mismatch_expected_id,
                    offset: reply.mismatch_expected_offset,
                },
                got: SnapshotSegmentId {
                    id: rpc.meta.snapshot_id.clone(),
                    offset: rpc.offset,
                },
            };
            return Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                MasterNode {
                    addr: self.addr.clone(),
                },
                RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)),
            )));
        }
        Ok(InstallSnapshotResponse {
            vote: vote_from_wire(reply.vote.as_ref()).map_err(bad_reply)?,
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, MasterNode, RaftError<u64>>> {
        let msg = RaftVoteRequest {
            vote: Some(vote_to_wire(&rpc.vote)),
            last_log_id: rpc.last_log_id.as_ref().map(log_id_to_wire),
        };
        let (mut client, req) = self.call(msg, &option).map_err(rpc_error)?;
        let reply = client.vote(req).await.map_err(rpc_error)?.into_inner();
        Ok(VoteResponse {
            vote: vote_from_wire(reply.vote.as_ref()).map_err(bad_reply)?,
            vote_granted: reply.vote_granted,
            last_log_id: reply.last_log_id.as_ref().map(log_id_from_wire),
        })
    }
}

/// Serves the other masters' Raft RPCs to this master's Raft.
#[derive(Clone)]
pub struct RaftService {
    raft: openraft::Raft<TypeConfig>,
}

impl RaftService {
    /// The service over `raft`.
    pub fn new(raft: openraft::Raft<TypeConfig>) -> RaftService {
        RaftService { raft }
    }
}

fn refused<E: std::fmt::Display>(what: &str, e: E) -> Status {
    tracing::warn!(error = %e, "a {what} from another master refused");
    Status::internal(format!("{what}: {e}"))
}

#[tonic::async_trait]
impl MasterRaft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftAppendRequest>,
    ) -> Result<Response<RaftAppendReply>, Status> {
        let rpc = append_from_wire(request.get_ref()).map_err(Status::invalid_argument)?;
        let resp = self
            .raft
            .append_entries(rpc)
            .await
            .map_err(|e| refused("AppendEntries", e))?;
        Ok(Response::new(append_reply_to_wire(&resp)))
    }

    async fn vote(
        &self,
        request: Request<RaftVoteRequest>,
    ) -> Result<Response<RaftVoteReply>, Status> {
        let r = request.into_inner();
        let rpc = VoteRequest {
            vote: vote_from_wire(r.vote.as_ref()).map_err(Status::invalid_argument)?,
            last_log_id: r.last_log_id.as_ref().map(log_id_from_wire),
        };
        let resp = self.raft.vote(rpc).await.map_err(|e| refused("Vote", e))?;
        Ok(Response::new(RaftVoteReply {
            vote: Some(vote_to_wire(&resp.vote)),
            vote_granted: resp.vote_granted,
            last_log_id: resp.last_log_id.as_ref().map(log_id_to_wire),
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftSnapshotRequest>,
    ) -> Result<Response<RaftSnapshotReply>, Status> {
        let r = request.into_inner();
        let meta = SnapshotRecord::decode(r.meta.as_ref())
            .map_err(|e| Status::invalid_argument(format!("snapshot metadata: {e}")))?
            .meta();
        let rpc = InstallSnapshotRequest {
            vote: vote_from_wire(r.vote.as_ref()).map_err(Status::invalid_argument)?,
            meta,
            offset: r.offset,
            data: r.data.to_vec(),
            done: r.done,
        };
        match self.raft.install_snapshot(rpc).await {
            Ok(resp) => Ok(Response::new(RaftSnapshotReply {
                vote: Some(vote_to_wire(&resp.vote)),
                ..RaftSnapshotReply::default()
            })),
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m))) => {
                Ok(Response::new(RaftSnapshotReply {
                    vote: None,
                    mismatch_expected_id: m.expect.id,
                    mismatch_expected_offset: m.expect.offset,
                    mismatch: true,
                }))
            }
            Err(e) => Err(refused("InstallSnapshot", e)),
        }
    }
}
