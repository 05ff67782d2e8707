//! Wall-clock time as gfs-rs writes it on the wire and in its logs: milliseconds since the Unix
//! epoch, in a `u64` (lease expiries, modification times, event times).
//!
//! A time before the epoch (a clock set far back) reads as 0; one past `u64::MAX` ms cannot
//! happen before the year 584,556,019.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a server reads wall-clock time (lease expiries, event times): the system's clock, or a
/// simulator's, one per simulated host and skewed as its nemesis decides.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<dyn Fn() -> SystemTime + Send + Sync>>);

impl Clock {
    /// The operating system's clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that reads `now` (simulators).
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Clock {
        Clock(Some(Arc::new(now)))
    }

    /// The time now.
    pub fn now(&self) -> SystemTime {
        match &self.0 {
            None => SystemTime::now(),
            Some(f) => f(),
        }
    }

    /// Milliseconds since the Unix epoch now.
    pub fn now_ms(&self) -> u64 {
        unix_ms(self.now())
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_none() {
            "Clock::system"
        } else {
            "Clock::from_fn"
        })
    }
}

/// Milliseconds from the Unix epoch to `t`; 0 for a time before the epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch now: `unix_ms(SystemTime::now())`.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// The time `ms` milliseconds after the Unix epoch: the inverse of [`unix_ms`].
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_since_the_epoch_round_trip() {
        assert_eq!(unix_ms(UNIX_EPOCH), 0);
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_micros(1_999)), 1);
        let t = from_unix_ms(1_764_547_200_123);
        assert_eq!(unix_ms(t), 1_764_547_200_123);
        assert_eq!(from_unix_ms(0), UNIX_EPOCH);
    }

    #[test]
    fn a_time_before_the_epoch_is_zero() {
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn a_clock_from_a_function_reads_it() {
        let c = Clock::from_fn(|| from_unix_ms(42));
        assert_eq!((c.now_ms(), c.clone().now()), (42, from_unix_ms(42)));
        assert!(Clock::system().now_ms() > 1_735_689_600_000);
    }

    #[test]
    fn now_is_after_2025() {
        // 2025-01-01T00:00:00Z.
        assert!(now_ms() > 1_735_689_600_000);
    }
}
