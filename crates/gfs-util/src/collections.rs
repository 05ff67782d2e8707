//! Hash maps and sets whose iteration order follows [`crate::random`]: per map random in
//! production, a function of the seed in a simulation (std's `RandomState` draws from the OS
//! and cannot be seeded, so a simulated run would not replay).
//!
//! Use these instead of `std::collections::{HashMap, HashSet}` (clippy refuses the std ones):
//! build them with `default()`, `with_capacity_and_hasher(n, Default::default())` or `collect()`.

use std::hash::BuildHasher;

use foldhash::fast::{FixedState, FoldHasher};

/// A `HashMap` seeded from [`crate::random`].
#[allow(clippy::disallowed_types)]
pub type HashMap<K, V> = std::collections::HashMap<K, V, Seeded>;
/// A `HashSet` seeded from [`crate::random`].
#[allow(clippy::disallowed_types)]
pub type HashSet<K> = std::collections::HashSet<K, Seeded>;
/// The map entry type of [`HashMap`].
#[allow(clippy::disallowed_types)]
pub use std::collections::hash_map::Entry;

/// A hasher builder (foldhash) whose seed is drawn from [`crate::random`] when the map is made.
#[derive(Clone, Debug)]
pub struct Seeded(FixedState);

impl Default for Seeded {
    fn default() -> Self {
        Seeded(FixedState::with_seed(crate::random::random()))
    }
}

impl BuildHasher for Seeded {
    type Hasher = FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Vec<u32> {
        let m: HashMap<u32, ()> = (0..64).map(|k| (k, ())).collect();
        m.into_keys().collect()
    }

    #[test]
    fn a_seeded_thread_iterates_in_the_same_order() {
        crate::random::seed_thread(3);
        let a = order();
        crate::random::seed_thread(3);
        assert_eq!(order(), a);
        crate::random::unseed_thread();
        let mut s: HashSet<u32> = HashSet::default();
        assert!(s.insert(5) && !s.insert(5));
    }
}
