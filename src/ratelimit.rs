//! Rate limits: one token bucket, and a bounded table of buckets keyed by
//! client address. Shared by the page server (events) and the relay (MSG),
//! so there is exactly one copy of the mechanism.
//!
//! Buckets refill lazily from timestamps: no timer thread, no polling.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How fast a bucket refills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: f64,
    pub per_sec: f64,
}

impl Rate {
    pub const fn new(burst: f64, per_sec: f64) -> Self {
        Rate { burst, per_sec }
    }
}

/// A token bucket refilled lazily from timestamps.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn full(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes one token; false (and nothing taken) when the bucket is empty.
    pub fn try_take(&mut self, now: Instant, rate: Rate) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the bucket was last touched (for forgetting idle keys).
    pub fn last_used(&self) -> Instant {
        self.last
    }
}

/// Buckets keyed by `K`, bounded in count: when the table is full, keys idle
/// for longer than `idle` are forgotten; if none are, the newcomer is
/// refused, so a client spraying keys cannot grow the table without bound.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    max_keys: usize,
    idle: Duration,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(rate: Rate, max_keys: usize, idle: Duration) -> Self {
        KeyedLimiter {
            rate,
            max_keys,
            idle,
            buckets: HashMap::new(),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one token from `key`'s bucket; false when it is empty.
    pub fn try_take(&mut self, key: &K, now: Instant) -> bool {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            let idle = self.idle;
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.last_used()) < idle);
            if self.buckets.len() >= self.max_keys {
                return false;
            }
        }
        let rate = self.rate;
        self.buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::full(rate, now))
            .try_take(now, rate)
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The key a per-client limit should count under: the address itself for
/// IPv4, its /64 network for IPv6 (one host usually holds a whole /64, so
/// per-address limits alone are free to dodge). IPv4-mapped IPv6 addresses
/// count as the IPv4 address they carry.
pub fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_refills_lazily() {
        let rate = Rate::new(2.0, 1.0);
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        assert!(b.try_take(t0, rate));
        assert!(b.try_take(t0, rate));
        assert!(!b.try_take(t0, rate));
        let later = t0 + Duration::from_millis(1500);
        assert!(b.try_take(later, rate));
        assert!(!b.try_take(later, rate));
    }

    #[test]
    fn keyed_limiter_is_bounded_and_forgets_idle_keys() {
        let mut l = KeyedLimiter::new(Rate::new(1.0, 1.0), 2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(l.try_take(&1u32, t0));
        assert!(!l.try_take(&1u32, t0));
        assert!(l.try_take(&2u32, t0));
        // Full, nobody idle: a third key is refused rather than stored.
        assert!(!l.try_take(&3u32, t0));
        assert_eq!(l.len(), 2);
        // Later, the idle keys are forgotten and the newcomer gets a bucket.
        assert!(l.try_take(&3u32, t0 + Duration::from_secs(11)));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(client_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(client_key(v4), v4);
    }
}
