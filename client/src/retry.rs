//! [`RetryPolicy`]: which failed calls the client tries again by itself, how often, and
//! how long it waits in between (exponential backoff with jitter).
//!
//! What may be retried depends on whether the failed attempt can have changed anything:
//!
//! | error | a read | a write (put, delete) |
//! |---|---|---|
//! | [`Overloaded`](ClientError::Overloaded) | retried | retried: the node refused it at admission, before coordinating anything |
//! | [`Unreachable`](ClientError::Unreachable) | retried | retried: no node received it |
//! | [`Unavailable`](ClientError::Unavailable) | retried | retried: the coordinator found too few replicas before writing anything |
//! | [`DiskFull`](ClientError::DiskFull) | retried | retried: the coordinator's store refused it |
//! | [`Timeout`](ClientError::Timeout) | retried | only with [`RetryPolicy::idempotent_writes`]: the write may have landed |
//! | the server's `Incomplete` | — | only with [`RetryPolicy::idempotent_writes`]: the write reached fewer replicas than it needed after the coordinator stored it, and spreads from them |
//! | [`Transport`](ClientError::Transport) | (already sent to the next node by the routing) | only with [`RetryPolicy::idempotent_writes`]: the outcome is unknown |
//!
//! A write retried after it landed is applied twice: with the same context both copies are
//! concurrent, so the key gets two siblings with the same value. Tell the policy writes are
//! idempotent only when that is harmless to the application (values that are sets, or
//! resolvers that deduplicate).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ClientError;

/// Default [`RetryPolicy::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default [`RetryPolicy::base`].
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(50);
/// Default [`RetryPolicy::cap`].
pub const DEFAULT_RETRY_CAP: Duration = Duration::from_secs(2);
/// Most attempts a policy may ask for: a bound on how long one call can keep trying.
pub const MAX_RETRY_ATTEMPTS: u32 = 20;

/// How a call that failed with a transient error is tried again.
///
/// The `n`-th retry (`n` from 0) waits a uniformly random time in
/// `[d / 2, d]`, where `d = min(cap, base * 2^n)` ("equal jitter": clients that failed
/// together do not retry together, and no wait is shorter than half its step).
///
/// ```toml
/// [retry]
/// max_attempts = 3          # tries in all, the first included; 1 turns retries off
/// base = "50ms"
/// cap = "2s"
/// idempotent_writes = false
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1..=[`MAX_RETRY_ATTEMPTS`]); 1 means never retry.
    pub max_attempts: u32,
    /// The first retry's wait (before jitter).
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// The longest wait between two tries (before jitter).
    #[serde(with = "humantime_serde")]
    pub cap: Duration,
    /// Whether a write whose outcome is unknown (`Timeout`, `Incomplete`, `Transport`)
    /// may be sent again. See the module documentation: a retried write that had landed
    /// is applied twice, as two siblings.
    pub idempotent_writes: bool,
    /// Seed of the jitter; `None` seeds from the process's random hasher keys. Tests set
    /// it so that waits are reproducible.
    #[serde(skip)]
    pub jitter_seed: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base: DEFAULT_RETRY_BASE,
            cap: DEFAULT_RETRY_CAP,
            idempotent_writes: false,
            jitter_seed: None,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Sets the number of tries in all.
    pub fn max_attempts(mut self, n: u32) -> RetryPolicy {
        self.max_attempts = n;
        self
    }

    /// Sets the first wait and the longest one.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> RetryPolicy {
        self.base = base;
        self.cap = cap;
        self
    }

    /// Declares writes idempotent: writes with an unknown outcome are retried too.
    pub fn idempotent_writes(mut self, yes: bool) -> RetryPolicy {
        self.idempotent_writes = yes;
        self
    }

    /// Makes the jitter reproducible.
    pub fn jitter_seed(mut self, seed: u64) -> RetryPolicy {
        self.jitter_seed = Some(seed);
        self
    }

    /// Checks the bounds: 1..=[`MAX_RETRY_ATTEMPTS`] attempts, `0 < base <= cap <= 60 s`.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_RETRY_ATTEMPTS).contains(&self.max_attempts) {
            return Err(format!(
                "retry.max_attempts must be in 1..={MAX_RETRY_ATTEMPTS}, got {}",
                self.max_attempts
            ));
        }
        if self.base.is_zero() || self.base > self.cap {
            return Err(format!(
                "retry.base must be positive and at most retry.cap ({:?} > {:?})",
                self.base, self.cap
            ));
        }
        if self.cap > Duration::from_secs(60) {
            return Err(format!("retry.cap must be at most 60s, got {:?}", self.cap));
        }
        Ok(())
    }

    /// Whether a call that failed with `error` on its `attempt`-th try (1 for the first)
    /// is tried again; `write` says whether the call changes data.
    pub fn should_retry(&self, error: &ClientError, attempt: u32, write: bool) -> bool {
        if attempt >= self.max_attempts || !error.is_retryable() {
            return false;
        }
        !write || error.is_not_applied() || self.idempotent_writes
    }

    /// The wait before retry number `retry` (0 for the first retry), given a uniformly
    /// random `random`: within `[d / 2, d]` with `d = min(cap, base * 2^retry)`.
    pub fn delay(&self, retry: u32, random: u64) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.cap);
        let half = step / 2;
        let span = (step - half).as_nanos() as u64;
        let extra = if span == 0 { 0 } else { random % (span + 1) };
        half + Duration::from_nanos(extra)
    }
}

/// The jitter's random numbers: splitmix64 on an atomic counter, so that it is shared by
/// every task of a client without a lock, and reproducible from a seed.
#[derive(Debug)]
pub(crate) struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    pub(crate) fn new(seed: Option<u64>) -> Jitter {
        let seed = seed.unwrap_or_else(|| {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        });
        Jitter {
            state: AtomicU64::new(seed),
        }
    }

    pub(crate) fn next(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::RequestError;

    #[test]
    fn delays_grow_exponentially_within_half_and_full_step_up_to_the_cap() {
        let p = RetryPolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(1));
        let jitter = Jitter::new(Some(7));
        for retry in 0..40 {
            let step = (Duration::from_millis(100) * 2u32.pow(retry.min(10))).min(p.cap);
            for _ in 0..50 {
                let d = p.delay(retry, jitter.next());
                assert!(
                    d >= step / 2 && d <= step,
                    "retry {retry}: {d:?} vs {step:?}"
                );
            }
        }
        assert_eq!(p.delay(0, 0), Duration::from_millis(50));
        assert_eq!(p.delay(5, 0), Duration::from_millis(500));
    }

    #[test]
    fn jitter_is_reproducible_from_a_seed_and_spread() {
        let (a, b) = (Jitter::new(Some(1)), Jitter::new(Some(1)));
        let xs: Vec<u64> = (0..100).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        let p = RetryPolicy::default();
        let distinct: std::collections::HashSet<Duration> =
            xs.iter().map(|&r| p.delay(3, r)).collect();
        assert!(distinct.len() > 90, "{}", distinct.len());
    }

    #[test]
    fn writes_are_retried_only_when_certainly_not_applied_unless_idempotent() {
        let p = RetryPolicy::default();
        let overloaded = ClientError::from(RequestError::Overloaded);
        let unavailable = ClientError::from(RequestError::Unavailable {
            needed: 2,
            alive: 1,
        });
        let timeout = ClientError::from(RequestError::Timeout { acks: 1, needed: 2 });
        let unreachable = ClientError::Unreachable {
            tried: vec![],
            last: "refused".into(),
        };
        for e in [&overloaded, &unavailable, &timeout, &unreachable] {
            assert!(p.should_retry(e, 1, false), "read {e}");
            assert!(!p.should_retry(e, p.max_attempts, false), "last try {e}");
        }
        assert!(p.should_retry(&overloaded, 1, true));
        assert!(p.should_retry(&unreachable, 1, true));
        assert!(p.should_retry(&unavailable, 1, true));
        assert!(!p.should_retry(&timeout, 1, true));
        let incomplete = ClientError::from(RequestError::Incomplete { acks: 1, needed: 2 });
        assert!(!p.should_retry(&incomplete, 1, true));
        let idem = p.clone().idempotent_writes(true);
        assert!(idem.should_retry(&unavailable, 1, true));
        assert!(idem.should_retry(&timeout, 1, true));
        let bad = ClientError::from(RequestError::InvalidOptions("r".into()));
        assert!(!idem.should_retry(&bad, 1, false));
        assert!(!RetryPolicy::never().should_retry(&overloaded, 1, false));
    }

    #[test]
    fn out_of_range_policies_are_refused() {
        RetryPolicy::default().validate().unwrap();
        RetryPolicy::never().validate().unwrap();
        for bad in [
            RetryPolicy::default().max_attempts(0),
            RetryPolicy::default().max_attempts(MAX_RETRY_ATTEMPTS + 1),
            RetryPolicy::default().backoff(Duration::ZERO, Duration::from_secs(1)),
            RetryPolicy::default().backoff(Duration::from_secs(2), Duration::from_secs(1)),
            RetryPolicy::default().backoff(Duration::from_secs(1), Duration::from_secs(61)),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
