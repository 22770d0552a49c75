//! Retries with exponential backoff and full jitter, and request rate limiting.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

/// The longest wait a source may ask for (HTTP `Retry-After`): 5 minutes. A longer
/// request is cut to this (and the connector asks again then).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// `[0, min(max, base · 2ⁿ)]`, and never shorter than what the source asked for.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(60))
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// Attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The ceiling of the next wait (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next wait; `asked` is a floor (e.g. HTTP Retry-After), itself capped at
    /// [`MAX_RETRY_AFTER`] so a source cannot park a connector for days.
    pub fn next_delay(&mut self, asked: Option<Duration>) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let jittered =
            Duration::from_millis(rand::rng().random_range(0..=ceiling.as_millis() as u64));
        jittered.max(asked.unwrap_or_default().min(MAX_RETRY_AFTER))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A shared limiter of requests per second.
pub type RateLimiter = Arc<governor::DefaultDirectRateLimiter>;

/// At most `per_second` requests per second (bursts of up to the same number).
pub fn rate_limiter(per_second: u32) -> RateLimiter {
    let n = NonZeroU32::new(per_second.max(1)).expect("at least 1");
    Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(
        n,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<u128> = (0..6)
            .map(|_| {
                let c = b.ceiling().as_millis();
                let d = b.next_delay(None);
                assert!(d.as_millis() <= c, "jitter stays under the ceiling");
                c
            })
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn backoff_honours_what_the_source_asked_for() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        assert!(b.next_delay(Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }

    #[test]
    fn what_the_source_asks_for_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let years = Duration::from_secs(u64::MAX / 4);
        assert_eq!(b.next_delay(Some(years)), MAX_RETRY_AFTER);
    }

    #[tokio::test]
    async fn rate_limiter_spaces_requests() {
        let l = rate_limiter(20);
        let start = std::time::Instant::now();
        for _ in 0..30 {
            l.until_ready().await;
        }
        // 20 in the first burst, then 10 more at 20/s: at least ~0.45 s.
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
    }
}
