//! Recent cluster events (a server died, a chunk was lost or repaired), kept for operators.
//!
//! The newest [`KEEP`] (200), in the registry, shown by the status page and `gfs admin report`.
//! Kinds: `server-dead`, `server-back`, `chunk-lost`, `chunk-found`, `repaired`, `corrupt`,
//! `restored` (a corrupt replica's bad blocks restored in place), `draining`,
//! `recommissioned`, `drained`.

use std::collections::VecDeque;

/// Something that happened to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// What kind of thing (`server-dead`, `chunk-lost`, ...).
    pub kind: String,
    /// What happened, for people.
    pub text: String,
}

/// Events kept at most; older ones are dropped.
pub const KEEP: usize = 200;

/// A bounded log of recent events, newest last.
#[derive(Debug, Default)]
pub struct Events {
    recent: VecDeque<Event>,
}

impl Events {
    /// Records an event of `kind` now.
    pub fn push(&mut self, kind: &str, text: String) {
        if self.recent.len() == KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back(Event {
            unix_ms: gfs_util::time::now_ms(),
            kind: kind.to_string(),
            text,
        });
    }

    /// The kept events, newest first.
    pub fn newest_first(&self) -> Vec<Event> {
        self.recent.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_lists_them_first() {
        let mut e = Events::default();
        for i in 0..KEEP + 5 {
            e.push("x", i.to_string());
        }
        let got = e.newest_first();
        assert_eq!(got.len(), KEEP);
        assert_eq!(got[0].text, (KEEP + 4).to_string());
        assert_eq!(got[KEEP - 1].text, "5");
    }
}
