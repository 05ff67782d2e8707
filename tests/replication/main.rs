//! End-to-end tests of the replicated append path against real `gfs-chunkserver` processes.

#![allow(clippy::unwrap_used, missing_docs)]

mod appends;
mod faults;
mod frames;
mod retention;
