//! The master's side of chunk tokens ([`gfs_host::token`]): the key, kept in the data
//! directory (`token.key`, made on the first start and written durably), so a restarted master
//! issues tokens the chunkservers still take, and the tokens stamped on every lease and chunk
//! location this master hands out, for the caller who asked.
//!
//! The key goes to each chunkserver in its registration reply. Leases carry tokens that allow
//! appends (and reads); locations carry read tokens. A token runs for `token_lifetime` (one
//! hour by default, at least four lease periods, so that a client's retries within a call
//! never outlive the token they started with); a client whose token expired or is refused
//! asks again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gfs_host::token::{Grant, KEY_LEN, Rights, TokenKey};
use gfs_proto::v1::{ChunkLease, GetChunksReply};
use gfs_util::disk::Disk;
use gfs_util::time::Clock;

/// The file that holds the key.
pub const KEY_FILE: &str = "token.key";

/// Issues chunk tokens.
#[derive(Clone, Debug)]
pub struct TokenIssuer {
    key: TokenKey,
    lifetime: Duration,
    clock: Clock,
}

/// The key file could not be read or written, or holds no key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct KeyFileError {
    path: PathBuf,
    reason: String,
}

impl TokenIssuer {
    /// An issuer with the key in `dir` (made there, durably, if there is none), tokens running
    /// for `lifetime` by `clock`.
    pub fn open(
        disk: &dyn Disk,
        dir: &Path,
        lifetime: Duration,
        clock: Clock,
    ) -> Result<TokenIssuer, KeyFileError> {
        let path = dir.join(KEY_FILE);
        let err = |reason: String| KeyFileError {
            path: path.clone(),
            reason,
        };
        let key = if disk.exists(&path) {
            let bytes = disk.read(&path).map_err(|e| err(e.to_string()))?;
            TokenKey::from_bytes(&bytes).ok_or_else(|| {
                err(format!(
                    "holds {} bytes, not a {KEY_LEN}-byte key (remove it to make a new one: \
                     tokens issued before then stop working)",
                    bytes.len()
                ))
            })?
        } else {
            let key = TokenKey::generate();
            gfs_util::crashsafe::replace(disk, &path, &key.to_bytes())
                .map_err(|e| err(e.to_string()))?;
            tracing::info!(path = %path.display(), "made a new chunk token key");
            key
        };
        Ok(TokenIssuer {
            key,
            lifetime,
            clock,
        })
    }

    /// The key, for the chunkservers.
    pub fn key_bytes(&self) -> Vec<u8> {
        self.key.to_bytes()
    }

    /// A token for `client` to do what `rights` allow on chunk `handle` at `version`.
    pub fn issue(&self, handle: u64, version: u64, rights: Rights, client: &str) -> Vec<u8> {
        let expires_unix_ms = self
            .clock
            .now_ms()
            .saturating_add(self.lifetime.as_millis() as u64);
        self.key.issue(&Grant {
            handle,
            version,
            rights,
            expires_unix_ms,
            client: client.to_string(),
        })
    }

    /// Puts an append token for `client` on `lease`.
    pub fn stamp_lease(&self, lease: &mut ChunkLease, client: &str) {
        lease.token = self
            .issue(lease.handle, lease.version, Rights::APPEND, client)
            .into();
    }

    /// Puts a read token for `client` on every chunk of `reply`.
    pub fn stamp_locations(&self, reply: &mut GetChunksReply, client: &str) {
        for c in &mut reply.chunks {
            c.token = self.issue(c.handle, c.version, Rights::READ, client).into();
        }
    }
}

/// The shared issuer of a master's services.
pub type Tokens = Arc<TokenIssuer>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gfs_util::disk::sim::SimDisk;

    #[test]
    fn the_key_survives_a_restart_and_a_bad_key_file_is_an_error() {
        let disk = SimDisk::new(3);
        let dir = PathBuf::from("/m");
        disk.create_dir_all(&dir).unwrap();
        let life = Duration::from_secs(60);
        let a = TokenIssuer::open(&disk, &dir, life, Clock::system()).unwrap();
        // Durable before the first token goes out: a power cut keeps it.
        disk.crash();
        let b = TokenIssuer::open(&disk, &dir, life, Clock::system()).unwrap();
        assert_eq!(a.key_bytes(), b.key_bytes());
        let t = a.issue(5, 2, Rights::READ, "c");
        let key = TokenKey::from_bytes(&b.key_bytes()).unwrap();
        let now = Clock::system().now_ms();
        let g = key.check(&t, 5, 2, Rights::READ, now).unwrap();
        assert_eq!(g.client, "c");
        assert!(g.expires_unix_ms >= now + 59_000);
        gfs_util::crashsafe::replace(&disk, &dir.join(KEY_FILE), b"short").unwrap();
        let e = TokenIssuer::open(&disk, &dir, life, Clock::system()).unwrap_err();
        assert!(e.to_string().contains("not a 32-byte key"), "{e}");
    }
}
