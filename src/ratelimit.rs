//! Per-client rate limiting for POST validate: governor's GCRA, one state per client key, with memory that
//! stays bounded however many distinct clients appear.
//!
//! The vendor contract prices calls per minute, so validations are limited per client with
//! RATE_LIMIT_PER_MINUTE (a token bucket of RATE_LIMIT_BURST tokens refilled one every 60s / limit). Only
//! validations are limited; health, readiness, docs and metrics never are, so probes keep working while a
//! client is throttled.
//!
//! **Client key.** The peer's address, or with TRUST_FORWARDED_FOR=true the first X-Forwarded-For address
//! (falling back to the peer when that is missing or malformed). IPv4-mapped IPv6 addresses count as their
//! IPv4 address, and IPv6 clients are keyed by their /64 network: one host usually owns a whole /64, so
//! keying by full address would let it walk through 2^64 fresh buckets.
//!
//! **Eviction.** governor's `retain_recent` drops keys whose bucket is full again (indistinguishable from a
//! new client). A background task runs it once per refill window; in addition, the store counts inserted
//! keys and, when that reaches `max_clients`, the request that notices sweeps inline. If more than half of
//! `max_clients` keys are still live after a sweep (a flood of distinct, recently active keys, e.g. forged
//! X-Forwarded-For values), all state is reset: every client gets a full bucket again. That gives an
//! attacker nothing it did not already have (each of its fresh keys had a full bucket anyway) and keeps
//! memory at `max_clients` entries (about 50 bytes each) instead of failing closed for new clients.
//!
//! **Headers.** `X-RateLimit-Limit` is the bucket size (RATE_LIMIT_BURST, which defaults to the per-minute
//! limit); `X-RateLimit-Remaining` is how many more validations would be accepted right now (governor's
//! remaining burst capacity); `X-RateLimit-Reset` is the number of seconds until the bucket is full again,
//! rounded up. governor does not expose the bucket's exact refill time, so after an accepted request Reset
//! is `(limit - remaining) × interval`, which overstates it by less than one interval (60s / limit).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderName, HeaderValue};

/// How many client keys the limiter holds at most (about 5 MB of state).
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;

pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// governor's DashMap store, plus a count of inserted keys so the limiter notices growth without calling
/// `DashMap::len` (which locks every shard) on each request. Clones share the same map.
#[derive(Debug, Clone, Default)]
pub struct ClientStore {
    map: Arc<DashMap<IpAddr, InMemoryState>>,
    /// Keys inserted since the last sweep, plus those the sweep kept. Approximate under races, which only
    /// moves the next sweep by a few requests.
    inserted: Arc<AtomicUsize>,
}

impl StateStore for ClientStore {
    type Key = IpAddr;

    fn measure_and_replace<T, F, E>(&self, key: &IpAddr, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        self.inserted.fetch_add(1, Ordering::Relaxed);
        let state = self.map.entry(*key).or_default();
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<IpAddr> for ClientStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.map, drop_below);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What the limiter decided for one request, with what the X-RateLimit-* headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The bucket size.
    pub limit: u32,
    /// Further requests that would be accepted right now.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// `Some` when the request is refused: how long until one more is accepted.
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// Whether the request may go on.
    pub fn allowed(&self) -> bool {
        self.retry_after.is_none()
    }

    /// Adds X-RateLimit-Limit, -Remaining and -Reset (whole seconds, rounded up).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let reset = self.reset.as_secs() + u64::from(self.reset.subsec_nanos() > 0);
        headers.insert(&X_RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(&X_RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(&X_RATELIMIT_RESET, HeaderValue::from(reset));
    }
}

type Limiter<C> = RateLimiter<IpAddr, ClientStore, C, StateInformationMiddleware>;

/// The per-client limiter. Generic over the clock so tests can drive it with governor's fake clock.
pub struct ClientLimiter<C: Clock = DefaultClock> {
    limiter: Limiter<C>,
    store: ClientStore,
    burst: u32,
    /// The time one request's worth of capacity takes to come back.
    interval: Duration,
    max_clients: usize,
    /// Held by whoever is sweeping, so concurrent requests that notice growth do not all sweep at once.
    sweeping: AtomicBool,
}

impl<C: Clock> fmt::Debug for ClientLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientLimiter")
            .field("burst", &self.burst)
            .field("interval", &self.interval)
            .field("max_clients", &self.max_clients)
            .field("clients", &self.store.map.len())
            .finish()
    }
}

impl ClientLimiter<DefaultClock> {
    /// The limiter for RATE_LIMIT_PER_MINUTE and RATE_LIMIT_BURST; `None` when limiting is off (limit 0).
    pub fn new(per_minute: u32, burst: u32) -> Option<Self> {
        Self::with_clock(
            per_minute,
            burst,
            DEFAULT_MAX_CLIENTS,
            DefaultClock::default(),
        )
    }

    /// Sweeps idle keys once per refill window for as long as the limiter is alive. The task holds only a
    /// weak reference, so it ends by itself once the server's state is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let every = self
            .refill_window()
            .clamp(Duration::from_secs(10), Duration::from_secs(300));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else { break };
                limiter.sweep();
            }
        });
    }
}

impl<C: Clock> ClientLimiter<C> {
    /// A limiter with an explicit clock and key cap; `None` when `per_minute` or `burst` is 0.
    pub fn with_clock(per_minute: u32, burst: u32, max_clients: usize, clock: C) -> Option<Self> {
        let quota =
            Quota::per_minute(NonZeroU32::new(per_minute)?).allow_burst(NonZeroU32::new(burst)?);
        let store = ClientStore::default();
        let limiter: Limiter<C> = RateLimiter::new(quota, store.clone(), clock);
        Some(Self {
            limiter,
            store,
            burst,
            interval: quota.replenish_interval(),
            max_clients: max_clients.max(2),
            sweeping: AtomicBool::new(false),
        })
    }

    /// How long an idle client's bucket takes to fill up completely.
    pub fn refill_window(&self) -> Duration {
        self.interval.saturating_mul(self.burst)
    }

    /// Takes one token from `client`'s bucket, or says how long to wait.
    pub fn check(&self, client: IpAddr) -> Decision {
        if self.store.inserted.load(Ordering::Relaxed) >= self.max_clients {
            self.sweep();
        }
        match self.limiter.check_key(&client) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(self.burst);
                Decision {
                    limit: self.burst,
                    remaining,
                    reset: self.interval.saturating_mul(self.burst - remaining),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Decision {
                    limit: self.burst,
                    remaining: 0,
                    reset: wait
                        .saturating_add(self.interval.saturating_mul(self.burst.saturating_sub(1))),
                    retry_after: Some(wait),
                }
            }
        }
    }

    /// Drops idle keys; if too many live keys remain, resets all state (see the module docs for why).
    pub fn sweep(&self) {
        if self.sweeping.swap(true, Ordering::Acquire) {
            return;
        }
        self.limiter.retain_recent();
        let mut live = self.limiter.len();
        if live > self.max_clients / 2 {
            tracing::warn!(
                clients = live,
                max_clients = self.max_clients,
                "rate limiter holds too many active clients; resetting all client state"
            );
            self.store.map.clear();
            live = 0;
        }
        self.limiter.shrink_to_fit();
        self.store.inserted.store(live, Ordering::Relaxed);
        self.sweeping.store(false, Ordering::Release);
    }

    /// How many client keys hold state now.
    pub fn clients(&self) -> usize {
        self.store.map.len()
    }
}

/// The key a request is limited under: the peer, or with `trust_forwarded_for` the first X-Forwarded-For
/// address when it parses (a bare IP, or `IP:port` / `[IPv6]:port`). IPv6 keys are cut to their /64.
pub fn client_key(peer: IpAddr, headers: &HeaderMap, trust_forwarded_for: bool) -> IpAddr {
    let ip = if trust_forwarded_for {
        forwarded_for(headers).unwrap_or(peer)
    } else {
        peer
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let value = headers.get(&X_FORWARDED_FOR)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    first
        .parse::<IpAddr>()
        .ok()
        .or_else(|| first.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limiter(
        per_minute: u32,
        burst: u32,
        max: usize,
    ) -> (ClientLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limiter = ClientLimiter::with_clock(per_minute, burst, max, clock.clone())
            .expect("limiting is on");
        (limiter, clock)
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn zero_means_off() {
        assert!(ClientLimiter::new(0, 0).is_none());
        assert!(ClientLimiter::new(5, 0).is_none());
        assert!(ClientLimiter::new(5, 5).is_some());
    }

    #[test]
    fn the_sixth_request_in_a_minute_is_refused_and_the_bucket_refills() {
        let (limiter, clock) = limiter(5, 5, 1000);
        let a = ip(1);
        for expected in (0..5).rev() {
            let d = limiter.check(a);
            assert!(d.allowed());
            assert_eq!((d.limit, d.remaining), (5, expected));
            assert_eq!(d.reset, Duration::from_secs(12) * (5 - expected));
        }
        let refused = limiter.check(a);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(12)));
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset, Duration::from_secs(60));
        // Another client has its own bucket.
        assert_eq!(limiter.check(ip(2)).remaining, 4);
        // One token comes back every 12 seconds.
        clock.advance(Duration::from_secs(12));
        assert!(limiter.check(a).allowed());
        assert!(!limiter.check(a).allowed());
    }

    #[test]
    fn headers_round_reset_up() {
        let d = Decision {
            limit: 5,
            remaining: 0,
            reset: Duration::from_millis(1500),
            retry_after: Some(Duration::from_millis(1500)),
        };
        let mut headers = HeaderMap::new();
        d.write_headers(&mut headers);
        assert_eq!(headers[&X_RATELIMIT_LIMIT], "5");
        assert_eq!(headers[&X_RATELIMIT_REMAINING], "0");
        assert_eq!(headers[&X_RATELIMIT_RESET], "2");
    }

    #[test]
    fn idle_clients_are_evicted_and_active_ones_kept() {
        let (limiter, clock) = limiter(5, 5, DEFAULT_MAX_CLIENTS * 10);
        for n in 0..100_000 {
            assert!(limiter.check(ip(n)).allowed());
        }
        let busy = ip(u32::MAX);
        for _ in 0..5 {
            assert!(limiter.check(busy).allowed());
        }
        assert_eq!(limiter.clients(), 100_001);
        clock.advance(Duration::from_secs(30));
        limiter.sweep();
        // The one-request clients' buckets are full again; the busy one is still refilling and must keep
        // its state, or it could burst again at once.
        assert_eq!(limiter.clients(), 1);
        assert_eq!(limiter.check(busy).remaining, 1);
    }

    #[test]
    fn a_flood_of_distinct_clients_stays_under_the_cap() {
        let max = 10_000;
        let (limiter, _clock) = limiter(5, 5, max);
        let mut peak = 0;
        for n in 0..100_000 {
            assert!(limiter.check(ip(n)).allowed());
            peak = peak.max(limiter.clients());
        }
        assert!(peak <= max, "peak {peak} above the cap {max}");
        assert!(limiter.clients() <= max);
        assert!(limiter.clients() > 0);
    }

    #[test]
    fn client_keys() {
        let peer: IpAddr = "10.0.0.9".parse().expect("ip");
        let mut headers = HeaderMap::new();
        assert_eq!(client_key(peer, &headers, true), peer);
        headers.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("203.0.113.7, 10.0.0.1"),
        );
        assert_eq!(client_key(peer, &headers, false), peer);
        assert_eq!(
            client_key(peer, &headers, true),
            "203.0.113.7".parse::<IpAddr>().expect("ip")
        );
        headers.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        assert_eq!(
            client_key(peer, &headers, true),
            "2001:db8::".parse::<IpAddr>().expect("ip")
        );
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("unknown"));
        assert_eq!(client_key(peer, &headers, true), peer);
        headers.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("::ffff:192.0.2.1"),
        );
        assert_eq!(
            client_key(peer, &headers, true),
            "192.0.2.1".parse::<IpAddr>().expect("ip")
        );
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().expect("ip");
        assert_eq!(
            client_key(v6, &HeaderMap::new(), false),
            "2001:db8:1:2::".parse::<IpAddr>().expect("ip")
        );
    }
}
