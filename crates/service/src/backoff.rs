//! Exponential backoff with jitter, for outboxes and webhooks.

use std::time::Duration;

use fapiao_crypto::rng::system_rng;
use rand_core::Rng;

/// Delay before retry `n` (0-based): `base · 2ⁿ`, at most `max`, then ±25 % jitter so that
/// retries of many entries spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub base: Duration,
    /// Longest delay (before jitter).
    pub max: Duration,
}

impl Backoff {
    /// The delay after `attempts` failed attempts.
    #[must_use]
    pub fn delay(&self, attempts: i64) -> Duration {
        let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
        let plain = self
            .base
            .saturating_mul(2_u32.saturating_pow(exp))
            .min(self.max);
        let mut r = [0u8; 2];
        system_rng().fill_bytes(&mut r);
        // 0.75 ..= 1.25 in 1/65535 steps, in integer arithmetic.
        let permille = 750 + u64::from(u16::from_le_bytes(r)) * 500 / u64::from(u16::MAX);
        let nanos = plain.as_nanos().saturating_mul(u128::from(permille)) / 1000;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_jitters_within_a_quarter() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for (n, plain) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (30, 1000),
        ] {
            for _ in 0..50 {
                let d = b.delay(n).as_millis();
                assert!((plain * 3 / 4..=plain * 5 / 4).contains(&d), "{n}: {d}");
            }
        }
    }
}
