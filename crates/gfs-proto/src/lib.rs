//! Generated gRPC types for the gfs-rs planes (`proto/gfs.proto`).
//!
//! This crate stays slim: what `build.rs` generates, plus [`telemetry`], the per-RPC spans and
//! metrics every gRPC server shares, and what keeps messages within [`MAX_MESSAGE`]
//! ([`report`]: chunk reports in pieces). Domain types live in the crates that own them and convert
//! from these at the edge.

#![allow(missing_docs, clippy::all)]

/// Version 1 of the gfs wire contracts (`package gfs.v1`).
pub mod v1 {
    tonic::include_proto!("gfs.v1");
}

/// The encoded `FileDescriptorSet` of every gfs proto file, for gRPC reflection and grpcurl.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/gfs_descriptor.bin"));

#[warn(missing_docs, clippy::all)]
pub mod report;
#[warn(missing_docs)]
pub mod telemetry;

/// The largest gRPC message (16 MiB) every server and client of the master's planes (`Master`,
/// `MasterControl`, `Admin`) decodes or encodes; tonic's default decode limit is 4 MiB. It is
/// headroom, not a size anything is built to: messages that grow with the cluster are bounded
/// well below it (chunk reports go in pieces, `GetChunks` is paged, fsck lists are capped; see
/// CLAUDE.md, gfs-proto). The replication and control planes size theirs from the largest
/// record instead.
pub const MAX_MESSAGE: usize = 16 << 20;

/// The encoded bytes (4 MiB) the master puts at most in one reply that lists many items: a page
/// of `GetChunks`, the unhealthy files of `Fsck`. A quarter of [`MAX_MESSAGE`].
pub const PAGE_BYTES: usize = 4 << 20;
