//! Reconnect backoff (tunnel.md §8): before retry n (1-based, exponent capped at 5) sleep uniformly in
//! `[0, 2^n s)`, never more than 32 s; a registration resets the count.

use std::time::Duration;

/// Maximum exponent and delay.
pub const MAX_RETRIES_EXPONENT: u32 = 5;
pub const MAX_DELAY: Duration = Duration::from_secs(32);

/// Per-connection backoff state. Pure: the random draw is passed in.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    retries: u32,
}

impl Backoff {
    /// Retries already used (sent as `numPreviousAttempts`, saturating at 255).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Upper bound of the next delay.
    pub fn next_ceiling(&self) -> Duration {
        let n = (self.retries + 1).min(MAX_RETRIES_EXPONENT);
        Duration::from_secs(1u64 << n).min(MAX_DELAY)
    }

    /// Counts a retry and returns its delay; `unit` is a uniform draw in `[0, 1)`; `at_least` is a minimum
    /// (the edge's `retryAfter`).
    pub fn next_delay(&mut self, unit: f64, at_least: Duration) -> Duration {
        let ceiling = self.next_ceiling();
        self.retries = self.retries.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0)).max(at_least)
    }

    /// The delay for a permanent error: the maximum.
    pub fn max_delay(&mut self) -> Duration {
        self.retries = self.retries.saturating_add(1);
        MAX_DELAY
    }

    /// A registration succeeded.
    pub fn reset(&mut self) {
        self.retries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_and_caps_at_32_seconds() {
        let mut b = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..7 {
            ceilings.push(b.next_ceiling().as_secs());
            b.next_delay(0.5, Duration::ZERO);
        }
        assert_eq!(ceilings, [2, 4, 8, 16, 32, 32, 32]);
        assert_eq!(b.retries(), 7);
    }

    #[test]
    fn delay_is_within_the_window_and_honours_a_minimum() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(0.999_999, Duration::ZERO).as_secs(), 1);
        assert_eq!(b.next_delay(0.0, Duration::from_secs(3)), Duration::from_secs(3));
        b.reset();
        assert_eq!(b.retries(), 0);
        assert_eq!(b.max_delay(), MAX_DELAY);
    }
}
