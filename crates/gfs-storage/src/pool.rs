//! Empty files made ahead of need. Creating a file costs an inode allocation and a directory
//! insert (0.1 to 1.3 ms each on this project's ext4 test machine, on the committer thread);
//! renaming one costs a few µs. A background thread keeps `TARGET` (64) empty `free-<n>` files
//! in the data directory, refilling once fewer than half are left, and chunk creation renames
//! one to `<handle>`. A crash leaves at most
//! `TARGET` empty files, which the next open adopts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use gfs_util::disk::{Disk, Open};
use parking_lot::{Condvar, Mutex};

/// Empty files kept ready.
const TARGET: usize = 64;

struct State {
    free: Vec<PathBuf>,
    next: u64,
    stop: bool,
}

struct Shared {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    state: Mutex<State>,
    low: Condvar,
}

/// The pool and its refilling thread; stops the thread on drop.
pub(crate) struct FilePool {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

const PREFIX: &str = "free-";

/// Whether `name` is a pool file's name.
pub(crate) fn is_pool_file(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|n| n.parse::<u64>().is_ok())
}

impl FilePool {
    /// Adopts the empty pool files left in `dir` and starts refilling.
    pub(crate) fn start(disk: Arc<dyn Disk>, dir: &Path) -> std::io::Result<FilePool> {
        let mut free = Vec::new();
        let mut next = 0;
        for e in disk.read_dir(dir)? {
            let Some(name) = e.name().filter(|n| is_pool_file(n)) else {
                continue;
            };
            if let Some(n) = name
                .strip_prefix(PREFIX)
                .and_then(|n| n.parse::<u64>().ok())
            {
                next = next.max(n + 1);
            }
            if e.len == 0 {
                free.push(e.path);
            } else {
                disk.remove_file(&e.path)?;
            }
        }
        let shared = Arc::new(Shared {
            disk,
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                free,
                next,
                stop: false,
            }),
            low: Condvar::new(),
        });
        // Without threads (a simulated disk) nothing refills: creation makes its own files.
        let thread = if shared.disk.threads() {
            let s = Arc::clone(&shared);
            Some(
                std::thread::Builder::new()
                    .name("gfs-file-pool".into())
                    .spawn(move || refill(&s))?,
            )
        } else {
            None
        };
        Ok(FilePool { shared, thread })
    }

    /// An empty file of the data directory to rename, if one is ready.
    pub(crate) fn take(&self) -> Option<PathBuf> {
        let mut st = self.shared.state.lock();
        let p = st.free.pop();
        if st.free.len() < TARGET / 2 {
            self.shared.low.notify_one();
        }
        p
    }
}

impl Drop for FilePool {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.low.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn refill(s: &Shared) {
    loop {
        // Sleep until the pool runs below half, then fill it up.
        {
            let mut st = s.state.lock();
            while !st.stop && st.free.len() >= TARGET / 2 {
                s.low.wait(&mut st);
            }
            if st.stop {
                return;
            }
        }
        loop {
            let n = {
                let mut st = s.state.lock();
                if st.stop {
                    return;
                }
                if st.free.len() >= TARGET {
                    break;
                }
                st.next += 1;
                st.next - 1
            };
            let p = s.dir.join(format!("{PREFIX}{n}"));
            match s.disk.open(&p, Open::CreateNew) {
                Ok(_) => s.state.lock().free.push(p),
                Err(e) => {
                    // A full disk or a vanished directory: creation makes its own files.
                    tracing::warn!(path = %p.display(), error = %e, "cannot make a pool file; retrying in 1 s");
                    let mut st = s.state.lock();
                    if !st.stop {
                        s.low.wait_for(&mut st, std::time::Duration::from_secs(1));
                    }
                    break;
                }
            }
        }
    }
}
