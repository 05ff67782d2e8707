//! Chunk tokens: what the master gives a client, with a chunk's locations or lease, so that a
//! chunkserver serves the client's data-plane requests on that chunk (HDFS's block access
//! tokens, with less ceremony).
//!
//! A token is an HMAC-SHA256, under a key only the master and the chunkservers hold, over the
//! chunk's handle and version, the rights it gives (read, append), when it expires (Unix ms),
//! and who it was issued to (the client certificate's name; empty without TLS). The master
//! makes a fresh random key each time it starts and hands it to every chunkserver in its
//! registration reply (over mutual TLS); a chunkserver checks the token of every data-plane
//! request against it before any other work, so a request with no token, a forged or altered
//! one, one for another chunk or version, one without the right, or an expired one is refused
//! with `BadToken`. A client refreshes its tokens from the master and retries: after a master
//! restart (new key) and after expiry alike.
//!
//! Wire form (at most [`MAX_TOKEN_LEN`] bytes): `[format u8 = 1][handle u64][version u64]
//! [rights u8][expires_unix_ms u64][client_len u8][client][mac 32]`, integers little-endian.

use ring::hmac;

/// Longest token a data-plane request may carry.
pub const MAX_TOKEN_LEN: usize = 256;
/// Longest client name a token carries (longer names are cut at a char boundary).
pub const MAX_CLIENT_LEN: usize = 64;
/// Length of a token key.
pub const KEY_LEN: usize = 32;

const FORMAT: u8 = 1;
const MAC_LEN: usize = 32;
/// Bytes before the client name.
const FIXED: usize = 1 + 8 + 8 + 1 + 8 + 1;

/// What a token lets its holder do on its chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights(u8);

impl Rights {
    /// Read the chunk (and learn its committed length).
    pub const READ: Rights = Rights(1);
    /// Append to the chunk (and flush its length), as well as read it.
    pub const APPEND: Rights = Rights(1 | 2);

    /// Whether these rights include all of `other`.
    pub fn allow(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }
}

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The chunk.
    pub handle: u64,
    /// The chunk's version it was issued at.
    pub version: u64,
    /// What it allows.
    pub rights: Rights,
    /// When it stops being good, in Unix milliseconds.
    pub expires_unix_ms: u64,
    /// Who it was issued to.
    pub client: String,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The request carried none.
    #[error("no chunk token (ask the master for the chunk's locations or lease)")]
    Missing,
    /// It does not parse.
    #[error("malformed chunk token")]
    Malformed,
    /// Its MAC does not check out under this server's key: forged, altered, or issued by
    /// another master (or before the master restarted).
    #[error(
        "chunk token not issued by this cluster's master (forged, or from before a master restart)"
    )]
    Forged,
    /// It is for another chunk or version.
    #[error(
        "chunk token is for chunk {have} version {have_version}, not {want} version {want_version}"
    )]
    WrongChunk {
        /// The token's chunk.
        have: u64,
        /// The token's version.
        have_version: u64,
        /// The request's chunk.
        want: u64,
        /// The request's version.
        want_version: u64,
    },
    /// It does not give the right the request needs.
    #[error("chunk token does not allow this (a read token used to append)")]
    Rights,
    /// It ran out.
    #[error("chunk token expired {ago_ms} ms ago")]
    Expired {
        /// How long ago.
        ago_ms: u64,
    },
    /// This server has no key yet (it has not registered with a master).
    #[error("this chunkserver has not registered with the master yet")]
    NoKey,
    /// It was issued to another name than the certificate of the connection it came on.
    #[error("chunk token issued to {holder:?}, not to {caller:?} (this connection's certificate)")]
    NotYours {
        /// Whom the token names.
        holder: String,
        /// Whom the connection's certificate names.
        caller: String,
    },
}

/// The secret tokens are made and checked with.
#[derive(Clone)]
pub struct TokenKey {
    raw: [u8; KEY_LEN],
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A new random key (from [`gfs_util::random`]: the OS's, or a simulator's seed).
    pub fn generate() -> TokenKey {
        TokenKey::from_raw(gfs_util::random::random::<[u8; KEY_LEN]>())
    }

    /// The key whose bytes are `bytes` (as [`TokenKey::to_bytes`] gave them); `None` unless
    /// they are [`KEY_LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<TokenKey> {
        Some(TokenKey::from_raw(bytes.try_into().ok()?))
    }

    fn from_raw(raw: [u8; KEY_LEN]) -> TokenKey {
        TokenKey {
            raw,
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
        }
    }

    /// The key's bytes, for the master to hand to the chunkservers.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.raw.to_vec()
    }

    /// The token for `grant`.
    pub fn issue(&self, grant: &Grant) -> Vec<u8> {
        let client = gfs_util::human::cut(&grant.client, MAX_CLIENT_LEN);
        let mut out = Vec::with_capacity(FIXED + client.len() + MAC_LEN);
        out.push(FORMAT);
        out.extend_from_slice(&grant.handle.to_le_bytes());
        out.extend_from_slice(&grant.version.to_le_bytes());
        out.push(grant.rights.0);
        out.extend_from_slice(&grant.expires_unix_ms.to_le_bytes());
        out.push(client.len() as u8);
        out.extend_from_slice(client.as_bytes());
        let tag = hmac::sign(&self.key, &out);
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// What `token` grants, if this key made it (the MAC is checked in constant time, before
    /// anything it says is believed).
    pub fn open(&self, token: &[u8]) -> Result<Grant, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN || token.len() < FIXED + MAC_LEN {
            return Err(TokenError::Malformed);
        }
        let (body, mac) = token.split_at(token.len() - MAC_LEN);
        hmac::verify(&self.key, body, mac).map_err(|_| TokenError::Forged)?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let client_len = usize::from(body[FIXED - 1]);
        if body[0] != FORMAT || body.len() != FIXED + client_len {
            return Err(TokenError::Malformed);
        }
        let client = std::str::from_utf8(&body[FIXED..])
            .map_err(|_| TokenError::Malformed)?
            .to_string();
        Ok(Grant {
            handle: u64_at(1),
            version: u64_at(9),
            rights: Rights(body[17]),
            expires_unix_ms: u64_at(18),
            client,
        })
    }

    /// Checks that `token` lets its holder do what `need` names on chunk `handle` at
    /// `version` at `now_unix_ms`; returns what it grants.
    pub fn check(
        &self,
        token: &[u8],
        handle: u64,
        version: u64,
        need: Rights,
        now_unix_ms: u64,
    ) -> Result<Grant, TokenError> {
        let g = self.open(token)?;
        if g.handle != handle || g.version != version {
            return Err(TokenError::WrongChunk {
                have: g.handle,
                have_version: g.version,
                want: handle,
                want_version: version,
            });
        }
        if !g.rights.allow(need) {
            return Err(TokenError::Rights);
        }
        if g.expires_unix_ms <= now_unix_ms {
            return Err(TokenError::Expired {
                ago_ms: now_unix_ms - g.expires_unix_ms,
            });
        }
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn grant() -> Grant {
        Grant {
            handle: 7,
            version: 3,
            rights: Rights::READ,
            expires_unix_ms: 1_000,
            client: "alice".into(),
        }
    }

    #[test]
    fn a_token_checks_out_for_its_chunk_version_and_rights_until_it_expires() {
        let k = TokenKey::generate();
        let t = k.issue(&grant());
        assert_eq!(k.check(&t, 7, 3, Rights::READ, 999).unwrap(), grant());
        assert_eq!(
            k.check(&t, 7, 3, Rights::READ, 1_000),
            Err(TokenError::Expired { ago_ms: 0 })
        );
        assert!(matches!(
            k.check(&t, 8, 3, Rights::READ, 0),
            Err(TokenError::WrongChunk {
                have: 7,
                want: 8,
                ..
            })
        ));
        assert!(matches!(
            k.check(&t, 7, 4, Rights::READ, 0),
            Err(TokenError::WrongChunk { .. })
        ));
        assert_eq!(
            k.check(&t, 7, 3, Rights::APPEND, 0),
            Err(TokenError::Rights)
        );
        let w = k.issue(&Grant {
            rights: Rights::APPEND,
            ..grant()
        });
        assert!(k.check(&w, 7, 3, Rights::APPEND, 0).is_ok());
        assert!(
            k.check(&w, 7, 3, Rights::READ, 0).is_ok(),
            "append allows read"
        );
    }

    #[test]
    fn a_forged_altered_or_foreign_token_is_refused() {
        let k = TokenKey::generate();
        let t = k.issue(&grant());
        // Every single bit flipped anywhere is caught.
        for i in 0..t.len() * 8 {
            let mut bad = t.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(k.open(&bad).is_err(), "bit {i}");
        }
        // A token of another key (another master, or before a restart).
        let other = TokenKey::generate();
        assert_eq!(k.open(&other.issue(&grant())), Err(TokenError::Forged));
        assert_eq!(k.open(&[]), Err(TokenError::Missing));
        assert_eq!(k.open(&[1; 10]), Err(TokenError::Malformed));
        assert_eq!(k.open(&[1; MAX_TOKEN_LEN + 1]), Err(TokenError::Malformed));
        // Any garbage that is not a token is refused, never a panic.
        for len in 0..MAX_TOKEN_LEN + 2 {
            assert!(k.open(&vec![0xAB; len]).is_err());
        }
    }

    #[test]
    fn a_key_travels_as_its_bytes_and_long_names_are_cut() {
        let k = TokenKey::generate();
        let back = TokenKey::from_bytes(&k.to_bytes()).unwrap();
        let g = Grant {
            client: "é".repeat(40),
            ..grant()
        };
        let t = k.issue(&g);
        assert!(t.len() <= MAX_TOKEN_LEN);
        let opened = back.open(&t).unwrap();
        assert_eq!(opened.client.len(), MAX_CLIENT_LEN);
        assert!(TokenKey::from_bytes(&[0; 31]).is_none());
    }
}
