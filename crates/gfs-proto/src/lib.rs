//! Generated gRPC types for the gfs-rs planes (`proto/gfs.proto`).
//!
//! This crate stays slim: what `build.rs` generates, plus what keeps messages within
//! [`MAX_MESSAGE`] ([`report`]: chunk reports in pieces). Its dependencies are what generated
//! code needs (prost, tonic, tonic-prost): the per-RPC spans and metrics and the operators' HTTP
//! server are gfs-telemetry's. Domain types live in the crates that own them and convert from
//! these at the edge.
//!
//! `build.rs` compiles `proto/gfs.proto` with `protox::compile` (pure Rust: no system `protoc`),
//! writes the encoded `FileDescriptorSet` that [`FILE_DESCRIPTOR_SET`] exports, and hands it to
//! `tonic_prost_build` with `bytes(".")`, so every `bytes` field is a `Bytes`.
//!
//! # Services
//!
//! - `Replication` (chunkserver to chunkserver): `Replicate`, a bidirectional session of
//!   id-tagged PREPARE / COMMIT / ABORT messages and their replies; `ReadChunk`, a server
//!   stream of one message per committed append with its op id (from a replica that dropped its
//!   op table: pieces of at most 1 MiB marked `op_forgotten`); `Seal`.
//! - `ChunkControl` (master to chunkserver): `CreateChunk`, `GrantLease`, `SetVersion`,
//!   `DeleteChunk`, `ReportChunks` (with an optional handle filter; lagging replicas too),
//!   `CloneChunk` (a copy, or with `catch_up` the extension of a shorter replica).
//! - `Master` (clients): namespace calls, `AppendChunk`, `GetChunks`, `ReportSealed`.
//! - `MasterControl` (chunkservers): `Register` (with the leases held; the server's chunk size
//!   and quorum go one way, the master's come back, and a mismatch refuses), `Heartbeat` (with
//!   `writing` and `disk_lost`), `ReportCorrupt`.
//! - `Admin` (operators): `Report`, `Fsck`, `Decommission`.
//! - `MasterRaft` (master to master): openraft's `AppendEntries`, `Vote` and
//!   `InstallSnapshot`, entries and snapshot metadata in the master's own log encoding.
//!
//! Field numbers are the wire format: never reuse one, reserve removed ones.
//!
//! # Message sizes
//!
//! Every server and client of the master's three services sets [`MAX_MESSAGE`] explicitly:
//! past tonic's default decode limit (4 MiB) a big server's heartbeat or a big file's chunk list
//! failed (finding 8 of the 2026-12-01 review). What grows with the cluster stays well below it:
//! - chunk reports go in pieces of at most 1 MiB ([`report`]);
//! - `GetChunks` is paged: the request names `first_index` and `max_chunks` (0: the master's
//!   default), the reply says `more` and `next_index`; a page holds at most 10,000 chunks and
//!   [`PAGE_BYTES`] encoded. A client that ignores `more` (one built before paging) sees only
//!   the first page of a file of more than 10,000 chunks;
//! - `Fsck` lists unhealthy files and chunks within [`PAGE_BYTES`] and counts the rest
//!   (`unhealthy_files`, `unlisted_files`, `FileHealth.unlisted_chunks`).
//!
//! The replication and control planes size their limits from the largest record (gfs-chunkserver).

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

/// The largest gRPC message (16 MiB) every server and client of the master's planes (`Master`,
/// `MasterControl`, `Admin`) decodes or encodes; tonic's default decode limit is 4 MiB. It is
/// headroom, not a size anything is built to: messages that grow with the cluster are bounded
/// well below it (chunk reports go in pieces, `GetChunks` is paged, fsck lists are capped; see
/// the crate doc). The replication and control planes size theirs from the largest record
/// instead.
pub const MAX_MESSAGE: usize = 16 << 20;

/// The encoded bytes (4 MiB) the master puts at most in one reply that lists many items: a page
/// of `GetChunks`, the unhealthy files of `Fsck`. A quarter of [`MAX_MESSAGE`].
pub const PAGE_BYTES: usize = 4 << 20;
