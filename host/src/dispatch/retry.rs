//! Backoff between delivery attempts: exponential with full jitter.
//!
//! Full jitter (a uniform draw between 0 and the exponential bound) spreads the
//! retries of many deliveries that failed together, so a target coming back is
//! not hit by all of them in the same instant.

use crate::rules::RetryPolicy;
use rand::Rng;

/// Delay before the attempt after `attempts` failed ones.
pub fn backoff_ms(policy: &RetryPolicy, attempts: u32) -> u64 {
    let bound = backoff_bound_ms(policy, attempts);
    // Never less than the base: a zero delay would turn a retry into a busy loop.
    rand::rng().random_range(policy.base_backoff_ms..=bound.max(policy.base_backoff_ms))
}

/// The upper bound of the jittered delay: base * 2^(attempts-1), capped.
pub fn backoff_bound_ms(policy: &RetryPolicy, attempts: u32) -> u64 {
    let exp = attempts.saturating_sub(1).min(32);
    policy
        .base_backoff_ms
        .saturating_mul(1u64 << exp)
        .min(policy.max_backoff_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_stays_in_bounds() {
        let p = RetryPolicy {
            base_backoff_ms: 100,
            max_backoff_ms: 1000,
            ..RetryPolicy::default()
        };
        assert_eq!(backoff_bound_ms(&p, 1), 100);
        assert_eq!(backoff_bound_ms(&p, 2), 200);
        assert_eq!(backoff_bound_ms(&p, 4), 800);
        assert_eq!(backoff_bound_ms(&p, 5), 1000);
        assert_eq!(backoff_bound_ms(&p, 185), 1000);
        for a in 1..20 {
            let d = backoff_ms(&p, a);
            assert!((100..=1000).contains(&d), "attempt {a}: {d}");
        }
    }
}
