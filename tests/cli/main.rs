//! End-to-end tests of the `gfs` command-line client against a real cluster: a `gfs-master`
//! process and `gfs-chunkserver` processes on port 0 with 1 MiB chunks, driven by running the
//! `gfs` binary as scripts would.

#![allow(clippy::unwrap_used, missing_docs)]

mod appends;
mod env;
mod faults;
mod namespace;
mod transfers;
