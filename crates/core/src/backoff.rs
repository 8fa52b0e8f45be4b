//! Retry pacing: exponential, jittered, capped at about a second, so a flusher never
//! busy-waits on a dead target yet notices its return quickly.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The first pause after a failure.
const MIN_DELAY: Duration = Duration::from_millis(20);
/// The pause before jitter stops growing; jitter adds up to as much again, so no pause is
/// longer than about a second.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// An endless sequence of pauses between attempts. Call [`Backoff::reset`] once the target
/// has proved healthy again.
#[derive(Debug)]
pub struct Backoff {
    delays: ExponentialBackoff,
}

impl Backoff {
    pub fn new() -> Self {
        Self {
            delays: Self::builder().build(),
        }
    }

    fn builder() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(MIN_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
    }

    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(MAX_DELAY)
    }

    pub fn reset(&mut self) {
        self.delays = Self::builder().build();
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_is_capped_near_a_second_and_resets() {
        let mut backoff = Backoff::new();
        let first = backoff.next_delay();
        assert!(first >= MIN_DELAY && first <= MIN_DELAY * 2, "{first:?}");
        let delays: Vec<_> = (0..50).map(|_| backoff.next_delay()).collect();
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(1)),
            "{delays:?}"
        );
        assert!(delays[40..].iter().all(|d| *d >= MAX_DELAY), "{delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= MIN_DELAY * 2);
    }
}
