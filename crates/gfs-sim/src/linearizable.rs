//! Linearizability of namespace operations: creates, deletes and renames of a few paths by
//! concurrent clients, each with the simulated times it was invoked and answered, checked
//! against a sequential model (which of the paths exist) by a Wing–Gong search with
//! memoization.
//!
//! An operation whose outcome the client could not know (the master did not answer: the
//! client's namespace mutations never retry, see `Client::list`) may have taken effect at any
//! moment after it was invoked, or never.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

/// Paths the namespace workload uses (`/n0` ...).
pub const PATHS: usize = 4;

/// A namespace operation on path indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create path `i` (a file).
    Create(usize),
    /// Delete path `i`.
    Delete(usize),
    /// Rename path `i` to path `j`.
    Rename(usize, usize),
    /// List the paths: which exist (a bit per path).
    List(u8),
}

/// What the client was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// It took effect.
    Ok,
    /// The (source) path did not exist.
    NotFound,
    /// The (destination) path existed.
    AlreadyExists,
}

/// One operation of the history.
#[derive(Clone, Debug)]
pub struct Call {
    /// The client that made it.
    pub client: usize,
    /// What.
    pub op: Op,
    /// When it was invoked.
    pub invoked: Duration,
    /// When it was answered and what it was told; None: the outcome is unknown.
    pub answered: Option<(Duration, Answer)>,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} {:?} at {:?}: ",
            self.client, self.op, self.invoked
        )?;
        match self.answered {
            Some((t, a)) => write!(f, "{a:?} at {t:?}"),
            None => write!(f, "unknown"),
        }
    }
}

/// The model's state after `op` from `state`, and the answers it allows.
fn step(state: u8, op: Op) -> (u8, Vec<Answer>) {
    let has = |i: usize| state & (1 << i) != 0;
    match op {
        Op::Create(i) if has(i) => (state, vec![Answer::AlreadyExists]),
        Op::Create(i) => (state | 1 << i, vec![Answer::Ok]),
        Op::Delete(i) if has(i) => (state & !(1 << i), vec![Answer::Ok]),
        Op::Delete(_) => (state, vec![Answer::NotFound]),
        Op::Rename(i, j) => match (has(i), has(j)) {
            (true, false) => ((state & !(1 << i)) | 1 << j, vec![Answer::Ok]),
            (false, true) => (state, vec![Answer::NotFound, Answer::AlreadyExists]),
            (false, false) => (state, vec![Answer::NotFound]),
            (true, true) => (state, vec![Answer::AlreadyExists]),
        },
        Op::List(seen) => (
            state,
            if seen == state {
                vec![Answer::Ok]
            } else {
                vec![]
            },
        ),
    }
}

/// Whether the history has a linearization from an empty namespace; on failure, a
/// description of the calls no linearization got past.
pub fn check(calls: &[Call]) -> Result<(), String> {
    assert!(calls.len() <= 128, "at most 128 calls per history");
    let known: u128 = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.answered.is_some())
        .fold(0, |m, (i, _)| m | 1 << i);
    let mut failed: BTreeSet<(u128, u8)> = BTreeSet::new();
    let mut deepest = 0u128;
    if search(calls, known, 0, 0, &mut failed, &mut deepest) {
        return Ok(());
    }
    let stuck: Vec<String> = calls
        .iter()
        .enumerate()
        .filter(|(i, c)| deepest & (1 << i) == 0 && c.answered.is_some())
        .take(8)
        .map(|(_, c)| c.to_string())
        .collect();
    Err(format!(
        "no linearization: {} of {} answered calls placed at most; first left: {}",
        (deepest & known).count_ones(),
        known.count_ones(),
        stuck.join("; ")
    ))
}

fn search(
    calls: &[Call],
    known: u128,
    done: u128,
    state: u8,
    failed: &mut BTreeSet<(u128, u8)>,
    deepest: &mut u128,
) -> bool {
    if done & known == known {
        return true;
    }
    if failed.contains(&(done, state)) {
        return false;
    }
    if (done & known).count_ones() > (*deepest & known).count_ones() {
        *deepest = done;
    }
    // A call may go next unless a call not yet placed was answered before it was invoked.
    let first_answer = calls
        .iter()
        .enumerate()
        .filter(|(i, _)| done & (1 << i) == 0)
        .filter_map(|(_, c)| c.answered.map(|(t, _)| t))
        .min()
        .unwrap_or(Duration::MAX);
    for (i, c) in calls.iter().enumerate() {
        if done & (1 << i) != 0 || c.invoked > first_answer {
            continue;
        }
        let (next, allowed) = step(state, c.op);
        let fits = match c.answered {
            Some((_, a)) => allowed.contains(&a),
            // Unknown: it took effect (whatever it was told).
            None => !allowed.is_empty(),
        };
        if fits && search(calls, known, done | 1 << i, next, failed, deepest) {
            return true;
        }
    }
    failed.insert((done, state));
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(client: usize, op: Op, from: u64, to: Option<(u64, Answer)>) -> Call {
        Call {
            client,
            op,
            invoked: Duration::from_millis(from),
            answered: to.map(|(t, a)| (Duration::from_millis(t), a)),
        }
    }

    #[test]
    fn sequential_and_overlapping_histories_linearize() {
        let h = vec![
            call(0, Op::Create(0), 0, Some((1, Answer::Ok))),
            call(0, Op::Rename(0, 1), 2, Some((3, Answer::Ok))),
            // Two overlapping creates of one path: one wins.
            call(0, Op::Create(2), 4, Some((8, Answer::AlreadyExists))),
            call(1, Op::Create(2), 5, Some((6, Answer::Ok))),
            call(1, Op::List(0b110), 9, Some((10, Answer::Ok))),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn an_unknown_outcome_may_have_happened_or_not() {
        let took = vec![
            call(0, Op::Create(0), 0, None),
            call(1, Op::Delete(0), 5, Some((6, Answer::Ok))),
        ];
        assert_eq!(check(&took), Ok(()));
        let did_not = vec![
            call(0, Op::Create(0), 0, None),
            call(1, Op::List(0), 5, Some((6, Answer::Ok))),
        ];
        assert_eq!(check(&did_not), Ok(()));
    }

    #[test]
    fn a_lost_create_or_a_double_rename_is_caught() {
        // Acknowledged, then not there for a later reader.
        let lost = vec![
            call(0, Op::Create(0), 0, Some((1, Answer::Ok))),
            call(1, Op::List(0), 2, Some((3, Answer::Ok))),
        ];
        assert!(check(&lost).is_err());
        // One file renamed away twice, one after the other.
        let twice = vec![
            call(0, Op::Create(0), 0, Some((1, Answer::Ok))),
            call(0, Op::Rename(0, 1), 2, Some((3, Answer::Ok))),
            call(1, Op::Rename(0, 2), 4, Some((5, Answer::Ok))),
        ];
        let e = check(&twice).expect_err("a file renamed away twice");
        assert!(e.contains("Rename(0, 2)"), "{e}");
    }
}
