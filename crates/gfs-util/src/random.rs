//! The one source of randomness of gfs-rs's servers and client (op ids, jitter, replica order,
//! hash-map seeds): the operating system's by default, or a seed's, so that a simulator replays
//! a run exactly.
//!
//! A thread draws from its own generator. Until [`seed_thread`] is called on it, that is rand's
//! `ThreadRng` (seeded from the OS, cryptographically strong); after, a `StdRng` seeded with the
//! given value. A simulator runs every host of a cluster on one thread, so seeding that thread
//! makes every draw of the whole cluster a function of the seed.

use std::cell::RefCell;

use rand::distr::uniform::{SampleRange, SampleUniform};
use rand::distr::{Distribution, StandardUniform};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Makes this thread's draws a function of `seed` from now on (simulators only).
pub fn seed_thread(seed: u64) {
    SEEDED.with(|s| *s.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

/// Gives this thread back the operating system's randomness.
pub fn unseed_thread() {
    SEEDED.with(|s| *s.borrow_mut() = None);
}

/// Runs `f` with this thread's generator.
pub fn with_rng<R>(f: impl FnOnce(&mut dyn RngCore) -> R) -> R {
    SEEDED.with(|s| match s.borrow_mut().as_mut() {
        Some(rng) => f(rng),
        None => f(&mut rand::rng()),
    })
}

/// A random value of `T`.
pub fn random<T>() -> T
where
    StandardUniform: Distribution<T>,
{
    with_rng(|r| r.random())
}

/// A random value in `range`, which must not be empty.
pub fn random_range<T: SampleUniform, R: SampleRange<T>>(range: R) -> T {
    with_rng(|r| r.random_range(range))
}

/// Puts `items` in a random order.
pub fn shuffle<T>(items: &mut [T]) {
    use rand::seq::SliceRandom;
    with_rng(|r| items.shuffle(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws() -> Vec<u64> {
        (0..8).map(|_| random::<u64>()).collect()
    }

    #[test]
    fn a_seeded_thread_draws_the_same_values_again() {
        seed_thread(7);
        let a = draws();
        seed_thread(7);
        assert_eq!(draws(), a);
        seed_thread(8);
        assert_ne!(draws(), a);
        unseed_thread();
        assert_ne!(draws(), draws(), "the OS's randomness again");
    }

    #[test]
    fn ranges_and_shuffles_follow_the_seed() {
        seed_thread(1);
        let r: Vec<u32> = (0..16).map(|_| random_range(0..10)).collect();
        assert!(r.iter().all(|&x| x < 10));
        let mut v: Vec<u32> = (0..32).collect();
        shuffle(&mut v);
        seed_thread(1);
        let again: Vec<u32> = (0..16).map(|_| random_range(0..10)).collect();
        let mut w: Vec<u32> = (0..32).collect();
        shuffle(&mut w);
        assert_eq!((r, v), (again, w));
        unseed_thread();
    }
}
