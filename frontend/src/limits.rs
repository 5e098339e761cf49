//! Rate limits per user on `/api` (logins are throttled by
//! [`crate::login_guard`]).

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;

use crate::error::ApiError;

pub struct RateLimits {
    api: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

/// Keys kept before idle ones are forgotten.
const MAX_KEYS: usize = 10_000;

impl RateLimits {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            api: RateLimiter::keyed(Quota::per_second(nz(per_sec)).allow_burst(nz(burst))),
            clock: DefaultClock::default(),
        }
    }

    fn check(&self, limiter: &DefaultKeyedRateLimiter<String>, key: &str) -> Result<(), ApiError> {
        if limiter.len() > MAX_KEYS {
            limiter.retain_recent();
        }
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            }
        })
    }

    pub fn check_user(&self, username: &str) -> Result<(), ApiError> {
        self.check(&self.api, username)
    }
}
