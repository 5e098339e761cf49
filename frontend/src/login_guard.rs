//! Login throttling that cannot lock a user out. Failed logins are counted
//! per client address, per address and user name together, and per user
//! name (unknown names included); only the first two refuse logins, so
//! someone else's failures never block a correct password from another
//! address, and spraying names from one address is slowed like guessing one
//! password. Counts live in fixed windows. Pure: time comes in as an
//! argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per window.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub per_address: u32,
    pub per_address_and_user: u32,
    pub window: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            per_address: 50,
            per_address_and_user: 10,
            window: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Count {
    n: u32,
    since: Instant,
}

#[derive(Default)]
struct Counts {
    address: HashMap<IpAddr, Count>,
    pair: HashMap<(IpAddr, String), Count>,
    user: HashMap<String, Count>,
}

/// Keys kept per table before expired windows are dropped.
const MAX_KEYS: usize = 100_000;

pub struct LoginGuard {
    budget: Budget,
    counts: Mutex<Counts>,
}

fn live(c: Option<&Count>, now: Instant, window: Duration) -> Option<Count> {
    c.copied().filter(|c| now.duration_since(c.since) < window)
}

fn bump<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Count>,
    key: K,
    now: Instant,
    window: Duration,
) {
    if map.len() > MAX_KEYS {
        map.retain(|_, c| now.duration_since(c.since) < window);
    }
    let c = map.entry(key).or_insert(Count { n: 0, since: now });
    if now.duration_since(c.since) >= window {
        *c = Count { n: 0, since: now };
    }
    c.n += 1;
}

impl LoginGuard {
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            counts: Mutex::default(),
        }
    }

    /// Whether `address` may try to log in as `user` now; if not, how long
    /// until it may.
    pub fn check(&self, address: IpAddr, user: &str, now: Instant) -> Result<(), Duration> {
        let Ok(counts) = self.counts.lock() else {
            return Ok(());
        };
        let b = self.budget;
        let over = |c: Option<Count>, limit: u32| {
            c.filter(|c| c.n >= limit)
                .map(|c| b.window.saturating_sub(now.duration_since(c.since)))
        };
        let by_address = over(
            live(counts.address.get(&address), now, b.window),
            b.per_address,
        );
        let by_pair = over(
            live(counts.pair.get(&(address, user.to_string())), now, b.window),
            b.per_address_and_user,
        );
        match by_address.into_iter().chain(by_pair).max() {
            Some(wait) => Err(wait.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    /// Counts a failed login; returns the user name's failures in this
    /// window (from every address), for the log.
    pub fn failed(&self, address: IpAddr, user: &str, now: Instant) -> u32 {
        let Ok(mut counts) = self.counts.lock() else {
            return 0;
        };
        let w = self.budget.window;
        bump(&mut counts.address, address, now, w);
        bump(&mut counts.pair, (address, user.to_string()), now, w);
        bump(&mut counts.user, user.to_string(), now, w);
        counts.user.get(user).map_or(0, |c| c.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> LoginGuard {
        LoginGuard::new(Budget {
            per_address: 20,
            per_address_and_user: 5,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn a_guesser_is_stopped_and_the_user_is_not() {
        let g = guard();
        let t0 = Instant::now();
        let (attacker, owner): (IpAddr, IpAddr) =
            ("10.0.0.9".parse().unwrap(), "10.0.0.1".parse().unwrap());
        for _ in 0..200 {
            if g.check(attacker, "ana", t0).is_ok() {
                g.failed(attacker, "ana", t0);
            }
        }
        assert!(g.check(attacker, "ana", t0).is_err(), "the guesser waits");
        // Ana, elsewhere, is never blocked by it.
        assert!(g.check(owner, "ana", t0).is_ok());
        // The guesser's window ends.
        assert!(g
            .check(attacker, "ana", t0 + Duration::from_secs(61))
            .is_ok());
    }

    #[test]
    fn spraying_names_from_one_address_is_slowed_too() {
        let g = guard();
        let t0 = Instant::now();
        let sprayer: IpAddr = "10.0.0.7".parse().unwrap();
        let mut tried = 0;
        for i in 0..1000 {
            let name = format!("nobody{i}");
            if g.check(sprayer, &name, t0).is_ok() {
                g.failed(sprayer, &name, t0);
                tried += 1;
            }
        }
        assert_eq!(tried, 20, "the address's budget");
        let wait = g.check(sprayer, "someone-else", t0).unwrap_err();
        assert!(wait <= Duration::from_secs(60) && wait >= Duration::from_secs(1));
        // Another address is untouched.
        assert!(g.check("10.0.0.8".parse().unwrap(), "ana", t0).is_ok());
    }

    #[test]
    fn failures_are_counted_per_user_name_across_addresses() {
        let g = guard();
        let t0 = Instant::now();
        let mut n = 0;
        for last in 1..=30u8 {
            n = g.failed(IpAddr::from([10, 0, 1, last]), "unknown-name", t0);
        }
        assert_eq!(n, 30);
    }
}
