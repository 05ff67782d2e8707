//! Measures the raw limits of the disk under a directory, for benchmarks to report ratios
//! against: fsync'd bandwidth (the faster of buffered and direct writes) and the small-write
//! fsync rate.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use gfs_util::disk::{Disk, Open, OsDisk};

fn scratch(dir: &Path, name: &str) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join(name))
}

/// Commits the journal of earlier deletions so they do not land in the next measurement.
pub fn settle(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// MiB/s of appending `total_mib` 1 MiB blocks to a new file, each followed by `fdatasync`:
/// the faster of writing them through the page cache and past it (`O_DIRECT`, as the stores
/// write large appends: `gfs_util::disk`), each measured on its own.
pub fn fsync_bandwidth(dir: &Path, total_mib: u64) -> io::Result<f64> {
    let buffered = bandwidth(dir, total_mib, false)?;
    let direct = bandwidth(dir, total_mib, true)?;
    Ok(buffered.max(direct))
}

/// [`fsync_bandwidth`] one way.
fn bandwidth(dir: &Path, total_mib: u64, direct: bool) -> io::Result<f64> {
    let name = "probe-bandwidth";
    let f = OsDisk.open(&dir.join(name), Open::Truncate)?;
    let buf = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    for i in 0..total_mib {
        match direct {
            true => f.write_direct_at(&buf, i << 20)?,
            false => f.write_all_at(&buf, i << 20)?,
        }
        f.sync_data()?;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(dir.join(name))?;
    settle(dir)?;
    Ok(total_mib as f64 / secs)
}

/// Operations/s of appending 4 KiB blocks to a new file, each followed by `fdatasync`, for
/// `window`.
pub fn fsync_rate(dir: &Path, window: Duration) -> io::Result<f64> {
    let name = "probe-rate";
    let f = scratch(dir, name)?;
    let buf = vec![0x5au8; 4096];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < window {
        f.write_all_at(&buf, n * 4096)?;
        f.sync_data()?;
        n += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(dir.join(name))?;
    settle(dir)?;
    Ok(n as f64 / secs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn probes_measure_and_clean_up() {
        let d = tempfile::tempdir().unwrap();
        assert!(fsync_bandwidth(d.path(), 2).unwrap() > 0.0);
        assert!(fsync_rate(d.path(), Duration::from_millis(20)).unwrap() > 0.0);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
