//! A token bucket: `capacity` units that refill continuously at `capacity` per minute. Pure
//! arithmetic on instants the caller passes in, so tests need no clock.
//!
//! A request takes units when it is admitted ([`TokenBucket::try_take`], which refuses when
//! too few are left and says how long until there are enough); work whose size is known only
//! afterwards is [`charged`](TokenBucket::charge) then, and may take the level below zero: the
//! debt is paid off by refilling before anything else is admitted.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    /// Units now (at `updated`); below zero while in debt.
    level: f64,
    per_sec: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `per_minute` units (at least one).
    pub fn per_minute(per_minute: u64, now: Instant) -> TokenBucket {
        let capacity = per_minute.max(1) as f64;
        TokenBucket {
            capacity,
            level: capacity,
            per_sec: capacity / 60.0,
            updated: now,
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity as u64
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + dt * self.per_sec).min(self.capacity);
        self.updated = self.updated.max(now);
    }

    /// Whole units left now (0 while in debt).
    pub fn remaining(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.level.max(0.0).floor() as u64
    }

    /// How long until `n` units are there (zero when they are; [`Duration::MAX`] when `n` is
    /// more than the bucket holds, which is never).
    pub fn wait_for(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        let short = n as f64 - self.level;
        if short <= 0.0 {
            Duration::ZERO
        } else if n as f64 > self.capacity {
            Duration::MAX
        } else {
            Duration::from_secs_f64(short / self.per_sec)
        }
    }

    /// Takes `n` units when they are there; otherwise takes nothing and says how long until
    /// they would be.
    pub fn try_take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        match self.wait_for(n, now) {
            Duration::ZERO => {
                self.level -= n as f64;
                Ok(())
            }
            wait => Err(wait),
        }
    }

    /// Takes `n` units whether or not they are there (the level may go below zero).
    pub fn charge(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.level -= n as f64;
    }

    /// How long until the bucket is full again.
    pub fn until_full(&mut self, now: Instant) -> Duration {
        self.refill(now);
        Duration::from_secs_f64((self.capacity - self.level) / self.per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn takes_until_empty_then_says_when_to_retry() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(60, t0);
        for _ in 0..60 {
            assert!(b.try_take(1, t0).is_ok());
        }
        assert_eq!(b.remaining(t0), 0);
        let wait = b.try_take(1, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-9, "{wait:?}");
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(b.remaining(t1), 1);
        assert!(b.try_take(1, t1).is_ok());
        assert!((b.until_full(t1).as_secs_f64() - 59.5).abs() < 1e-9);
    }

    #[test]
    fn a_charge_can_go_into_debt_which_refilling_pays_off() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(600, t0); // 10 per second
        b.charge(700, t0);
        assert_eq!(b.remaining(t0), 0);
        let wait = b.wait_for(1, t0).as_secs_f64();
        assert!((wait - 10.1).abs() < 1e-9, "{wait}");
        let t1 = t0 + Duration::from_secs(5);
        assert!((b.wait_for(1, t1).as_secs_f64() - 5.1).abs() < 1e-9);
        assert_eq!(b.remaining(t0 + Duration::from_secs(600)), 600, "capped");
    }

    proptest! {
        /// Over any run of takes, what was taken never exceeds the capacity plus what refilled
        /// in the time, and a refused take's wait is exactly enough.
        #[test]
        fn never_gives_more_than_the_rate(
            per_minute in 1u64..5000,
            steps in proptest::collection::vec((0u64..2000, 1u64..50), 1..100),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::per_minute(per_minute, t0);
            let mut now = t0;
            let mut taken = 0u64;
            for (ms, n) in steps {
                now += Duration::from_millis(ms);
                match b.try_take(n, now) {
                    Ok(()) => taken += n,
                    Err(Duration::MAX) => prop_assert!(n > per_minute),
                    Err(wait) => {
                        let mut probe = b.clone();
                        prop_assert!(probe.try_take(n, now + wait + Duration::from_micros(1)).is_ok());
                    }
                }
                let elapsed = now.duration_since(t0).as_secs_f64();
                let allowed = per_minute as f64 * (1.0 + elapsed / 60.0);
                prop_assert!(taken as f64 <= allowed + 1e-6, "{taken} > {allowed}");
            }
        }
    }
}
