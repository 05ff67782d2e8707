//! Appender workloads: tasks that append self-describing records to one file through a
//! [`Client`], each noting in a [`History`] what it sent and where it was acknowledged, for the
//! checker.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gfs_client::Client;
use tokio::task::JoinHandle;

use crate::{History, RecordId, record};

/// What the appenders write.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The file (it must exist).
    pub path: String,
    /// One task per writer id; a record's `writer` is its task's id.
    pub writers: Range<u32>,
    /// Records each writer appends; `None`: until [`Appenders::stop`].
    pub records: Option<u32>,
    /// The length of record `id`.
    pub size: fn(RecordId) -> usize,
    /// Pause after each append.
    pub pace: Duration,
    /// A failed append fails the test (`true`), or is left unacknowledged and the writer goes
    /// on (`false`).
    pub must_succeed: bool,
}

impl Workload {
    /// `records` records of 20 to 25 KB from each of `writers` to `path`, with no pause, every
    /// append required to succeed.
    pub fn new(path: &str, writers: Range<u32>, records: Option<u32>) -> Workload {
        Workload {
            path: path.to_string(),
            writers,
            records,
            size: |id| 20_000 + (id.writer as usize * 7 + id.seq as usize * 13) % 5_000,
            pace: Duration::ZERO,
            must_succeed: true,
        }
    }
}

/// Appender tasks running a [`Workload`].
pub struct Appenders {
    tasks: Vec<JoinHandle<History>>,
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Appenders {
    /// Starts one task per writer of `w`, appending through `c`.
    pub fn start(c: &Client, w: Workload) -> Appenders {
        let acked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = w
            .writers
            .clone()
            .map(|writer| {
                let (c, w) = (c.clone(), w.clone());
                let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut h = History::new();
                    let mut seq = 0u32;
                    while w.records.map_or(!stop.load(Ordering::SeqCst), |n| seq < n) {
                        let id = RecordId { writer, seq };
                        let rec = record(id, (w.size)(id));
                        h.sent(id, rec.len());
                        match c.append(&w.path, rec).await {
                            Ok(off) => {
                                h.acked(id, off);
                                acked.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) if w.must_succeed => {
                                panic!("append of record {writer}/{seq} to {}: {e}", w.path)
                            }
                            Err(e) => println!("record {writer}/{seq} not acknowledged: {e}"),
                        }
                        seq += 1;
                        if !w.pace.is_zero() {
                            tokio::time::sleep(w.pace).await;
                        }
                    }
                    h
                })
            })
            .collect();
        Appenders { tasks, acked, stop }
    }

    /// Appends acknowledged so far, by all writers.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until `n` appends were acknowledged; panics, saying so, after `within`.
    pub async fn until_acked(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.acked() < n {
            assert!(
                Instant::now() < deadline,
                "appends did not get going: {} of {n} acknowledged in {within:?}",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Tells writers without a record count to stop after the append they are in.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for every writer to finish, and their histories merged.
    pub async fn join(self) -> History {
        let mut h = History::new();
        for t in self.tasks {
            h.merge(t.await.expect("an appender task panicked"));
        }
        h
    }
}

/// Asserts that every record `h` acknowledged reads back whole through `c` at its offset in
/// `path` (`when` says at which point of the test, for the message).
pub async fn assert_acked_read_back(c: &Client, path: &str, h: &History, when: &str) {
    for (id, off) in &h.acked {
        let want = record(*id, h.sent[id]);
        let got = c
            .read(path, *off, want.len() as u64)
            .await
            .unwrap_or_else(|e| panic!("{when}: reading record {id:?} at {off}: {e}"));
        assert!(
            got[..] == want[..],
            "{when}: acknowledged record {id:?} at {off} lost"
        );
    }
}
