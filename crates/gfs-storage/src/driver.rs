//! Who runs the committer: its own thread (the OS's disk), or, on a disk without threads (a
//! simulated one, `Disk::threads`), the store's callers, each running the rounds queued before
//! it waits for its reply, so that a seed's disk operations come in one order.

use std::sync::mpsc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::committer::Committer;
use crate::state::Job;

/// The committer's runner.
pub(crate) enum Driver {
    Thread(JoinHandle<()>),
    Inline(Mutex<(Committer, mpsc::Receiver<Job>)>),
}

impl Driver {
    /// Starts `committer` on its jobs `rx`: on a thread of its own, or not (`threads` false).
    pub(crate) fn start(
        committer: Committer,
        rx: mpsc::Receiver<Job>,
        threads: bool,
    ) -> std::io::Result<Driver> {
        if !threads {
            return Ok(Driver::Inline(Mutex::new((committer, rx))));
        }
        let thread = std::thread::Builder::new()
            .name("gfs-committer".into())
            .spawn(move || committer.run(rx))?;
        Ok(Driver::Thread(thread))
    }

    /// Runs the rounds queued, without a thread (a no-op with one). Called with no lock held.
    pub(crate) fn drive(&self) {
        if let Driver::Inline(c) = self
            // A caller already running rounds (none in one task) runs this job too.
            && let Some(mut c) = c.try_lock()
        {
            let (committer, rx) = &mut *c;
            committer.drain(rx);
        }
    }

    /// Once the job queue is closed: lets the committer finish what is queued and checkpoint.
    pub(crate) fn stop(self) {
        match self {
            Driver::Thread(t) => {
                let _ = t.join();
            }
            Driver::Inline(c) => {
                let (mut committer, rx) = c.into_inner();
                committer.drain(&rx);
                committer.close();
            }
        }
    }
}
