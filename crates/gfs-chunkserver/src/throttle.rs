//! A byte-rate cap shared by the copies of one server (re-replication bandwidth).

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Paces byte transfers to at most `rate` bytes per second in total, with a burst of one
/// second's worth.
pub struct Throttle {
    rate: u64,
    /// When the bytes granted so far will have been paid for at `rate`.
    paid_until: Mutex<Instant>,
}

impl Throttle {
    /// A throttle at `rate` bytes per second; 0 means no cap.
    pub fn new(rate: u64) -> Throttle {
        Throttle {
            rate,
            paid_until: Mutex::new(Instant::now()),
        }
    }

    /// Waits until `bytes` more may pass.
    pub async fn take(&self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        let burst = Duration::from_secs(1);
        let wake = {
            let mut paid = self.paid_until.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            // A transfer may run up to one burst ahead of the rate; idle time earns no more.
            *paid = (*paid).max(now) + cost;
            (*paid).checked_sub(burst).filter(|t| *t > now)
        };
        if let Some(t) = wake {
            tokio::time::sleep_until(t).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_rate_after_a_one_second_burst() {
        let t = Throttle::new(1000);
        let start = Instant::now();
        // The first second's worth passes at once.
        t.take(1000).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Then 3,000 more bytes take three seconds.
        for _ in 0..30 {
            t.take(100).await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(3), "{took:?}");
        assert!(took < Duration::from_millis(3100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_no_cap() {
        let t = Throttle::new(0);
        let start = Instant::now();
        t.take(u64::MAX).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_earns_at_most_one_second() {
        let t = Throttle::new(1000);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = Instant::now();
        t.take(3000).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
