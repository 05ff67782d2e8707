//! The streaming reader: a file's bytes in order, several reads in flight, padding skipped.
//!
//! It learns the chunks' lengths first (as [`crate::Client::chunk_length`] does), then keeps
//! `in_flight` reads of `read_piece` bytes going ahead of the consumer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::model::ChunkInfo;

/// Reads a whole file in order ([`AsyncRead`]); a background task keeps
/// [`crate::ClientConfig::in_flight`] reads going ahead of the consumer.
pub struct Reader {
    rx: mpsc::Receiver<Result<Bytes>>,
    cur: Bytes,
    task: JoinHandle<()>,
    size: u64,
}

impl Client {
    /// A streaming reader of the whole of `path`, in order, padding skipped.
    pub async fn reader(&self, path: &str) -> Result<Reader> {
        Reader::open(self.clone(), path).await
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reader {
    pub(crate) async fn open(client: Client, path: &str) -> Result<Reader> {
        let l = client.refresh(path).await?;
        let mut lengths = Vec::with_capacity(l.chunks.len());
        for c in &l.chunks {
            lengths.push(client.chunk_length(path, c).await?);
        }
        let size = lengths.iter().sum();
        let in_flight = client.config().in_flight.max(1);
        let piece = client.read_piece(l.chunk_size);
        let (tx, rx) = mpsc::channel(in_flight);
        let path = path.to_string();
        let chunks: Vec<(ChunkInfo, u64)> = l.chunks.iter().cloned().zip(lengths).collect();
        let task = tokio::spawn(async move {
            let pieces = chunks.into_iter().flat_map(|(c, len)| {
                (0..len.div_ceil(piece)).map(move |i| {
                    let at = i * piece;
                    (c.clone(), at, piece.min(len - at) as u32)
                })
            });
            let mut reads = futures::stream::iter(pieces)
                .map(|(c, at, n)| {
                    let (client, path) = (client.clone(), path.clone());
                    async move { read_piece(&client, &path, c, at, n).await }
                })
                .buffered(in_flight);
            while let Some(r) = reads.next().await {
                let failed = r.is_err();
                if tx.send(r).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Reader {
            rx,
            cur: Bytes::new(),
            task,
            size,
        })
    }

    /// Bytes the file held when the reader opened it (what it will yield).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next bytes of the file, in order, as they arrived (a read piece, without the
    /// copy [`AsyncRead`] makes); None after the last.
    pub async fn next_piece(&mut self) -> Option<Result<Bytes>> {
        if !self.cur.is_empty() {
            return Some(Ok(std::mem::take(&mut self.cur)));
        }
        self.rx.recv().await
    }
}

/// One piece, from any replica; if none serves it, once more after asking the master.
async fn read_piece(client: &Client, path: &str, c: ChunkInfo, at: u64, n: u32) -> Result<Bytes> {
    match client.read_chunk(path, &c, at, n).await {
        Err(ClientError::NoReplica { .. }) => {
            let l = client.refresh(path).await?;
            let fresh = l
                .chunks
                .iter()
                .find(|x| x.handle == c.handle)
                .cloned()
                .unwrap_or(c);
            client.read_chunk(path, &fresh, at, n).await
        }
        other => other,
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.cur.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => self.cur = b,
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(std::io::Error::other(e)));
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.cur.len().min(buf.remaining());
        buf.put_slice(&self.cur[..n]);
        self.cur.advance(n);
        Poll::Ready(Ok(()))
    }
}
