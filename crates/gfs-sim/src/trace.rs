//! A run's event trace: what the nemesis did and what the clients were told, stamped with
//! simulated time, folded into one hash (with every simulated disk's own trace hash) that two
//! runs of one seed must agree on.

use std::fmt::Display;
use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// The trace of one run; cheap to clone, shared by the harness and the clients.
#[derive(Clone)]
pub struct Trace(Arc<Mutex<Inner>>);

struct Inner {
    hash: DefaultHasher,
    print: bool,
}

impl Trace {
    /// An empty trace; `print` echoes each event to stdout as it happens.
    pub fn new(print: bool) -> Trace {
        Trace(Arc::new(Mutex::new(Inner {
            hash: DefaultHasher::new(),
            print,
        })))
    }

    /// Notes `what` happening at `at` (simulated time since the start).
    pub fn at(&self, at: Duration, what: impl Display) {
        let line = format!("{:>9.3} {what}", at.as_secs_f64());
        let mut t = self.0.lock();
        t.hash.write(line.as_bytes());
        if t.print {
            println!("{line}");
        }
    }

    /// Notes `what` happening now, on the host whose software is running.
    pub fn event(&self, what: impl Display) {
        self.at(now(), what)
    }

    /// Folds `value` (a disk's trace hash, say) into the hash.
    pub fn fold(&self, value: u64) {
        self.0.lock().hash.write_u64(value);
    }

    /// The hash of everything noted so far.
    pub fn hash(&self) -> u64 {
        self.0.lock().hash.finish()
    }
}

/// Simulated time since the start, on a host of the simulation (zero outside one).
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}
