//! The streaming writer: one writer fills a file's chunks exactly, several appends in flight.
//!
//! Pieces are `min(write_piece, chunk/4, room left in the chunk)` bytes, `in_flight` at once.
//! Every piece is an `APPEND_AT` at the offset the writer expects, so pieces in flight land in
//! the order they were sent or not at all. A piece that fills its chunk makes the primary seal
//! it; the writer then drains and asks the master for the next chunk. When a piece fails, the
//! writer waits for everything in flight and sends the failed piece and its successors again,
//! one by one, with their original op ids (a piece that did commit answers with its offset).
//! If the master sealed the chunk on its own meanwhile (a replica failed under the lease), the
//! pieces below the sealed length are in it, acknowledged once a quorum of its replicas say so,
//! and the rest go to the start of the file's next chunk (`sealed_under`): a reader finds the
//! bytes after a sealed length there, so the file still reads back byte for byte. If the
//! master seals that next chunk too before the rest is in it, the recovery starts again from
//! the piece in hand.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use gfs_dataplane::DataError;
use gfs_proto::v1::{ChunkLease, CreateFileRequest};
use tokio::task::JoinHandle;

use crate::append::{OpAnswer, Votes, listed, reached, sealed_length};
use crate::client::{Client, Retry, data_retriable, lease_ref};
use crate::error::{ClientError, Result};

struct Piece {
    op: u64,
    at: u64,
    data: Bytes,
    task: JoinHandle<Result<u64, DataError>>,
}

/// Writes a stream of bytes to the end of a file; see the module docs. Call
/// [`Writer::finish`]: dropping a writer abandons what is still in flight.
pub struct Writer {
    client: Client,
    path: String,
    lease: Option<ChunkLease>,
    /// Offset in the current chunk where the next piece goes.
    next: u64,
    buf: BytesMut,
    inflight: VecDeque<Piece>,
    acked: u64,
}

impl Client {
    /// A streaming writer appending to `path` (a new or empty file, one writer at a time):
    /// fills chunks exactly, so the file reads back byte for byte.
    pub fn writer(&self, path: &str) -> Writer {
        Writer::new(self.clone(), path)
    }

    /// Creates the empty file `path` (failing if it exists) and a writer to fill it, the
    /// file's first chunk and its lease made in the same call to the master, logged in one
    /// record with the file: [`Client::create`] then [`Client::writer`] with one call to the
    /// master and one log write fewer (a small file's cost). When the master makes no chunk
    /// then (too few chunkservers now, or an older master), the file is created alone and
    /// the writer asks for its chunk as it writes. For a file that will hold bytes: one
    /// left empty keeps its first chunk, empty (stat counts it), where [`Client::writer`]
    /// opens none.
    pub async fn create_writer(&self, path: &str) -> Result<Writer> {
        let req = CreateFileRequest {
            path: path.into(),
            replication: 0,
            first_chunk: true,
        };
        let reply = self
            .mutate(|mut m| {
                let req = req.clone();
                async move { m.create(req).await }
            })
            .await?;
        let mut w = Writer::new(self.clone(), path);
        w.lease = reply.first_chunk;
        Ok(w)
    }
}

impl Writer {
    pub(crate) fn new(client: Client, path: &str) -> Writer {
        Writer {
            client,
            path: path.to_string(),
            lease: None,
            next: 0,
            buf: BytesMut::new(),
            inflight: VecDeque::new(),
            acked: 0,
        }
    }

    /// Bytes acknowledged durable so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Queues `data`; sends whole pieces as they fill, waiting while too many are in flight.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(data);
        // Only bytes in hand open a new chunk: a file that ends on a chunk boundary has no
        // empty chunk after it.
        while !self.buf.is_empty() {
            let piece = self.piece_len().await?;
            if self.buf.len() < piece {
                return Ok(());
            }
            let d = self.buf.split_to(piece).freeze();
            self.send(d).await?;
        }
        Ok(())
    }

    /// Sends what is buffered and waits until every byte is durable and readable (a reader
    /// right after finds all of it, the last chunk's primary gone or not); returns the bytes
    /// written.
    pub async fn finish(mut self) -> Result<u64> {
        while !self.buf.is_empty() {
            let piece = self.piece_len().await?.min(self.buf.len());
            let d = self.buf.split_to(piece).freeze();
            self.send(d).await?;
        }
        while !self.inflight.is_empty() {
            self.complete_one().await?;
        }
        self.flush().await?;
        Ok(self.acked)
    }

    /// Has the primary of the last chunk tell its secondaries how much a quorum holds
    /// (`Request::Flush`): until a secondary hears it, it shows readers only what it heard
    /// before, so with that primary gone a reader could find the file short. A chunk this
    /// writer filled is sealed: its length is the master's. When the primary is gone, the
    /// next lease (a fence from a quorum's longest) or a seal makes the length known.
    async fn flush(&mut self) -> Result<()> {
        let Some(mut l) = self.lease.clone() else {
            return Ok(());
        };
        if self.next >= l.chunk_size || self.next == 0 {
            return Ok(());
        }
        let mut retry = self.client.retry();
        loop {
            let res = match l.primary.as_ref().map(|p| p.data_addr.clone()) {
                Some(addr) => match self.client.conn(&addr).await {
                    Ok(c) => {
                        let r = c.flush(&lease_ref(&l)).await;
                        if let Err(e) = &r {
                            self.client.drop_conn_on(&addr, e);
                        }
                        r
                    }
                    Err(e) => Err(e),
                },
                None => Err(DataError::Unavailable("no primary".into())),
            };
            let e = match res {
                Ok(length) if length >= self.next => return Ok(()),
                Ok(length) => {
                    return Err(ClientError::Master(format!(
                        "{}: the primary vouches for {length} of the {} bytes written to its chunk",
                        self.path, self.next
                    )));
                }
                Err(e) if !data_retriable(&e) => return Err(e.into()),
                Err(e) => e,
            };
            retry.wait(&e).await?;
            if self.sealed(l.handle, &mut retry).await? {
                return Ok(());
            }
            l = match self.relet(&mut retry).await {
                Ok(l) => l,
                Err(_) if self.sealed(l.handle, &mut retry).await? => return Ok(()),
                Err(e) => return Err(e),
            };
        }
    }

    /// Whether the master has chunk `handle` of the file sealed.
    async fn sealed(&self, handle: u64, retry: &mut Retry) -> Result<bool> {
        Ok(self.sealed_at(handle, retry).await?.is_some())
    }

    /// The length the master sealed chunk `handle` of the file at, if it did.
    async fn sealed_at(&self, handle: u64, retry: &mut Retry) -> Result<Option<u64>> {
        let layout = self.client.refresh_with(&self.path, retry).await?;
        Ok(sealed_length(&layout, handle))
    }

    /// The master sealed the chunk being written (`old`) at `length` on its own, as it does
    /// when a replica fails under a lease. Of the pieces not yet acknowledged (`pending`, in
    /// order), those below `length` are in it (this writer alone writes the file): each is
    /// acknowledged once a quorum of the chunk's replicas say so ([`Client::ask_op`]); the
    /// rest go, in order, to the start of the file's next chunk, as a reader finds the bytes
    /// after the sealed length there.
    async fn sealed_under(
        &mut self,
        old: ChunkLease,
        length: u64,
        pending: VecDeque<(u64, u64, Bytes)>,
        retry: &mut Retry,
    ) -> Result<()> {
        tracing::info!(path = %self.path, handle = old.handle, length, "the chunk being written was sealed by the master; going on in the next");
        let mut rest = Vec::new();
        for (op, at, data) in pending {
            let len = data.len() as u64;
            if at >= length {
                rest.push(data);
                continue;
            }
            if at + len > length {
                return Err(ClientError::Master(format!(
                    "{}: chunk {} was sealed at {length}, inside the piece written at {at}",
                    self.path, old.handle
                )));
            }
            loop {
                let layout = self.client.refresh_with(&self.path, retry).await?;
                let mut replicas = reached(&old);
                replicas.extend(listed(&layout, old.handle));
                let mut votes = Votes::default();
                let mut answer = self
                    .client
                    .ask_op(&old, replicas, &mut votes, op, &data)
                    .await;
                // Sealed without it at the master's length: it is not there.
                if answer.is_none() && votes.full_at(length) {
                    answer = Some(OpAnswer::NotThere);
                }
                match answer {
                    Some(OpAnswer::At(off)) if off == at => {
                        self.acked += len;
                        break;
                    }
                    Some(OpAnswer::At(off)) => {
                        return Err(ClientError::Master(format!(
                            "piece meant for offset {at} landed at {off}"
                        )));
                    }
                    Some(OpAnswer::NotThere) => {
                        return Err(ClientError::Master(format!(
                            "{}: chunk {} was sealed at {length} without the piece written at {at}; the file is not single-writer",
                            self.path, old.handle
                        )));
                    }
                    Some(OpAnswer::Forgotten) => {
                        return Err(crate::append::outcome_unknown(&self.path, old.handle));
                    }
                    None => retry
                        .wait(
                            "a quorum of the sealed chunk's replicas has not confirmed a piece yet",
                        )
                        .await?,
                }
            }
        }
        if rest.is_empty() {
            // Nothing past the sealed length: the next bytes in hand open the next chunk.
            self.next = old.chunk_size;
            return Ok(());
        }
        // The file goes on in its next chunk.
        let mut l = loop {
            let l = self.client.lease(&self.path, retry).await?;
            if l.handle != old.handle {
                break l;
            }
            retry
                .wait("the master hands out the sealed chunk still")
                .await?;
        };
        self.lease = Some(l.clone());
        self.next = 0;
        let mut rest = VecDeque::from(rest);
        while let Some(data) = rest.pop_front() {
            let len = data.len() as u64;
            let op = gfs_util::random::random::<u64>().max(1);
            loop {
                let at = self.next;
                match self.spawn_append(&l, op, at, data.clone()).await {
                    Ok(Ok(off)) if off == at => break,
                    Ok(Ok(off)) => {
                        return Err(ClientError::Master(format!(
                            "piece meant for offset {at} landed at {off}"
                        )));
                    }
                    Ok(Err(e)) if data_retriable(&e) => {
                        retry.wait(&e).await?;
                        l = match self.relet(retry).await {
                            Ok(l) => l,
                            Err(e) => {
                                // The master sealed this chunk too (seed 12216 of the
                                // simulator: a replica of the next chunk failed as well): the
                                // recovery starts again from this piece, the ones after it
                                // unsent.
                                let Some(length) = self.sealed_at(l.handle, retry).await? else {
                                    return Err(e);
                                };
                                let mut pending = VecDeque::from([(op, at, data)]);
                                let mut next = at + len;
                                for d in rest {
                                    let op = gfs_util::random::random::<u64>().max(1);
                                    let n = d.len() as u64;
                                    pending.push_back((op, next, d));
                                    next += n;
                                }
                                return Box::pin(self.sealed_under(l, length, pending, retry))
                                    .await;
                            }
                        };
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Err(e) => return Err(DataError::Internal(e.to_string()).into()),
                }
            }
            self.next += len;
            self.acked += len;
        }
        Ok(())
    }

    /// The size of the next piece: it never crosses the end of the current chunk.
    async fn piece_len(&mut self) -> Result<usize> {
        let chunk_size = self.current().await?.chunk_size;
        let cfg = self.client.config();
        Ok((cfg.write_piece as u64)
            .min(chunk_size / 4)
            .min(chunk_size - self.next)
            .max(1) as usize)
    }

    /// The lease of the chunk being filled; a new chunk once the current one is full.
    async fn current(&mut self) -> Result<ChunkLease> {
        // The chunk is full (or none yet): everything in flight must land first, then the
        // primary has sealed it and the master hands out the next. A recovery may move the
        // file on to its next chunk meanwhile (`sealed_under`): that one is current then.
        loop {
            if let Some(l) = &self.lease
                && self.next < l.chunk_size
            {
                return Ok(l.clone());
            }
            if self.inflight.is_empty() {
                break;
            }
            self.complete_one().await?;
        }
        let old = self.lease.take();
        let mut retry = self.client.retry();
        loop {
            let l = self.client.lease(&self.path, &mut retry).await?;
            if old.as_ref().is_some_and(|o| o.handle == l.handle) {
                retry.wait("the full chunk is not sealed yet").await?;
                continue;
            }
            self.next = 0;
            self.lease = Some(l.clone());
            return Ok(l);
        }
    }

    async fn send(&mut self, data: Bytes) -> Result<()> {
        self.current().await?;
        while self.inflight.len() >= self.client.config().in_flight.max(1) {
            self.complete_one().await?;
        }
        // A recovery may have moved the file on to its next chunk (`sealed_under`).
        let l = self.current().await?;
        let op = gfs_util::random::random::<u64>().max(1);
        let at = self.next;
        self.next += data.len() as u64;
        let task = self.spawn_append(&l, op, at, data.clone());
        self.inflight.push_back(Piece { op, at, data, task });
        Ok(())
    }

    fn spawn_append(
        &self,
        l: &ChunkLease,
        op: u64,
        at: u64,
        data: Bytes,
    ) -> JoinHandle<Result<u64, DataError>> {
        let client = self.client.clone();
        let addr = l.primary.as_ref().map(|p| p.data_addr.clone());
        let chunk = lease_ref(l);
        tokio::spawn(async move {
            let addr = addr.ok_or_else(|| DataError::Unavailable("no primary".into()))?;
            let c = client.conn(&addr).await?;
            let res = c.append_at(&chunk, op, Some(at), data).await;
            if let Err(e) = &res {
                client.drop_conn_on(&addr, e);
            }
            res
        })
    }

    /// Waits for the oldest piece in flight; on failure, recovers every piece from it on.
    async fn complete_one(&mut self) -> Result<()> {
        let Some(p) = self.inflight.pop_front() else {
            return Ok(());
        };
        let res = p
            .task
            .await
            .unwrap_or_else(|e| Err(DataError::Internal(e.to_string())));
        match res {
            Ok(off) if off == p.at => {
                self.acked += p.data.len() as u64;
                Ok(())
            }
            Ok(off) => Err(ClientError::Master(format!(
                "piece meant for offset {} landed at {off}",
                p.at
            ))),
            Err(e) => {
                tracing::debug!(path = %self.path, at = p.at, error = %e, "piece failed; resending from it");
                let mut redo = vec![(p.op, p.at, p.data)];
                while let Some(q) = self.inflight.pop_front() {
                    let _ = q.task.await;
                    redo.push((q.op, q.at, q.data));
                }
                let mut retry = self.client.retry();
                let mut failure = Some(e);
                let mut redo: VecDeque<(u64, u64, Bytes)> = redo.into();
                while let Some((op, at, data)) = redo.pop_front() {
                    loop {
                        if let Some(f) = failure.take() {
                            // OffsetMismatch is final too: another op holds these offsets. A
                            // sealed replica's word on a piece: the master sealed the chunk
                            // (asked below).
                            if !data_retriable(&f) && !matches!(f, DataError::SealedWith { .. }) {
                                return Err(f.into());
                            }
                            retry.wait(&f).await?;
                        }
                        let l = match self.relet(&mut retry).await {
                            Ok(l) => l,
                            Err(e) => {
                                let Some(old) = self.lease.clone() else {
                                    return Err(e);
                                };
                                let Some(length) = self.sealed_at(old.handle, &mut retry).await?
                                else {
                                    return Err(e);
                                };
                                redo.push_front((op, at, data));
                                return self.sealed_under(old, length, redo, &mut retry).await;
                            }
                        };
                        let len = data.len() as u64;
                        match self.spawn_append(&l, op, at, data.clone()).await {
                            Ok(Ok(off)) if off == at => {
                                self.acked += len;
                                break;
                            }
                            Ok(Ok(off)) => {
                                return Err(ClientError::Master(format!(
                                    "piece meant for offset {at} landed at {off}"
                                )));
                            }
                            Ok(Err(e)) => failure = Some(e),
                            Err(e) => failure = Some(DataError::Internal(e.to_string())),
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Asks the master again for the lease of the chunk being filled (its primary may have
    /// moved); fails if the file moved on to another chunk.
    async fn relet(&mut self, retry: &mut Retry) -> Result<ChunkLease> {
        let l = self.client.lease(&self.path, retry).await?;
        let current = self.lease.as_ref().map(|c| c.handle);
        if current != Some(l.handle) {
            return Err(ClientError::Master(format!(
                "{}: the chunk being written ({current:?}) was sealed by someone else; the file is not single-writer",
                self.path
            )));
        }
        self.lease = Some(l.clone());
        Ok(l)
    }
}
