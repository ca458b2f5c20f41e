//! Per-client rate limiting for POST validate: governor's GCRA, one state per client key, with memory that
//! stays bounded however many distinct clients appear.
//!
//! The vendor contract prices calls per minute, so validations are limited per client with
//! RATE_LIMIT_PER_MINUTE (a token bucket of RATE_LIMIT_BURST tokens refilled one every 60s / limit). Only
//! validations are limited; health, readiness, docs and metrics never are, so probes keep working while a
//! client is throttled.
//!
//! **Client key.** A [`ClientKey`]: the TCP peer's address, or with TRUSTED_PROXY_HOPS=N ≥ 1 the address the
//! outermost trusted proxy saw, which is the Nth entry from the right of X-Forwarded-For (proxies append, so
//! everything left of it was written by the client and is never used; see [`client_addr`]). IPv4-mapped IPv6
//! addresses count as their IPv4 address, and IPv6 clients are keyed by their /64 network: one host usually
//! owns a whole /64, so keying by full address would let it walk through 2^64 fresh buckets.
//!
//! **Bounded memory, never failing open.** The table holds at most `max_clients` keys (about 50 bytes each).
//! governor's `retain_recent` drops keys whose bucket is full again, which are indistinguishable from a new
//! client; a key whose bucket is not full (every client being limited, above all) is never dropped, and no
//! state is ever reset wholesale. A background task sweeps once per refill window; a request that finds the
//! table full sweeps inline first. If the table is still full (a flood of distinct keys that all stay active,
//! e.g. the /64s of one /48), keys not yet in the table share one overflow bucket with the per-client quota
//! until sweeps free room: new clients are still served, at the rate of one client between them, and nobody
//! already known gets a fresh bucket. While the table is full, the inline sweep is retried only after every
//! `max_clients / 16` overflow requests, so a flood costs O(1) amortised work per request.
//!
//! **Headers.** `X-RateLimit-Limit` is the bucket size (RATE_LIMIT_BURST, which defaults to the per-minute
//! limit); `X-RateLimit-Remaining` is how many more validations would be accepted right now (governor's
//! remaining burst capacity); `X-RateLimit-Reset` is the number of seconds until the bucket is full again,
//! rounded up. governor does not expose the bucket's exact refill time, so after an accepted request Reset
//! is `(limit - remaining) × interval`, which overstates it by less than one interval (60s / limit).

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// Who a validation is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// A network client: its IPv4 address or IPv6 /64 (see [`client_addr`]).
    Addr(IpAddr),
    /// An authenticated calling application (its client id), when callers authenticate.
    App(Arc<str>),
}

/// governor's DashMap store, bounded: a count of inserted keys (so growth is noticed without calling
/// `DashMap::len`, which locks every shard, on each request) and the overflow bucket that keys share when
/// the table is full. Clones share the same state.
#[derive(Debug, Clone)]
pub struct ClientStore {
    map: Arc<DashMap<ClientKey, InMemoryState>>,
    /// Keys inserted since the last sweep, plus those the sweep kept. Approximate under races, which only
    /// moves the next sweep by a few requests.
    inserted: Arc<AtomicUsize>,
    max_clients: usize,
    /// The bucket shared by keys that found the table full.
    overflow: Arc<InMemoryState>,
    /// Requests that used the overflow bucket since the last sweep (see [`ClientLimiter::check`]).
    overflowed: Arc<AtomicUsize>,
    /// Requests that used the overflow bucket, ever.
    overflowed_total: Arc<AtomicU64>,
}

impl ClientStore {
    fn new(max_clients: usize) -> Self {
        Self {
            map: Arc::default(),
            inserted: Arc::default(),
            max_clients,
            overflow: Arc::default(),
            overflowed: Arc::default(),
            overflowed_total: Arc::default(),
        }
    }

    fn is_full(&self) -> bool {
        self.inserted.load(Ordering::Relaxed) >= self.max_clients
    }
}

impl StateStore for ClientStore {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        if self.is_full() {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            self.overflowed_total.fetch_add(1, Ordering::Relaxed);
            return self.overflow.measure_and_replace(&NotKeyed::NonKey, f);
        }
        self.inserted.fetch_add(1, Ordering::Relaxed);
        let state = self.map.entry(key.clone()).or_default();
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<ClientKey> for ClientStore {
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

type Limiter<C> = RateLimiter<ClientKey, ClientStore, C, StateInformationMiddleware>;

/// The per-client limiter. Generic over the clock so tests can drive it with governor's fake clock.
pub struct ClientLimiter<C: Clock = DefaultClock> {
    limiter: Limiter<C>,
    store: ClientStore,
    burst: u32,
    /// The time one request's worth of capacity takes to come back.
    interval: Duration,
    max_clients: usize,
    /// While the table stays full, an inline sweep is tried again after this many overflow requests.
    sweep_every: usize,
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
        let max_clients = max_clients.max(2);
        let store = ClientStore::new(max_clients);
        let limiter: Limiter<C> = RateLimiter::new(quota, store.clone(), clock);
        Some(Self {
            limiter,
            store,
            burst,
            interval: quota.replenish_interval(),
            max_clients,
            sweep_every: (max_clients / 16).max(1),
            sweeping: AtomicBool::new(false),
        })
    }

    /// How long an idle client's bucket takes to fill up completely.
    pub fn refill_window(&self) -> Duration {
        self.interval.saturating_mul(self.burst)
    }

    /// Takes one token from `client`'s bucket, or says how long to wait.
    pub fn check(&self, client: &ClientKey) -> Decision {
        if self.store.is_full() {
            // The first request to find the table full sweeps; while it stays full, every `sweep_every`th.
            let overflowed = self.store.overflowed.load(Ordering::Relaxed);
            if overflowed == 0 || overflowed >= self.sweep_every {
                self.sweep();
            }
        }
        match self.limiter.check_key(client) {
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

    /// Drops the keys whose bucket is full again (idle clients); never a key that is still refilling.
    pub fn sweep(&self) {
        if self.sweeping.swap(true, Ordering::Acquire) {
            return;
        }
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let live = self.limiter.len();
        self.store.inserted.store(live, Ordering::Relaxed);
        // Still full: count from one, so the next inline sweep waits for `sweep_every` overflow requests.
        let still_full = usize::from(live >= self.max_clients);
        let before = self.store.overflowed.swap(still_full, Ordering::Relaxed);
        if still_full == 1 && before == 0 {
            tracing::warn!(
                clients = live,
                max_clients = self.max_clients,
                "rate limiter table is full of active clients; new clients share one overflow bucket"
            );
        }
        self.sweeping.store(false, Ordering::Release);
    }

    /// How many client keys hold state now.
    pub fn clients(&self) -> usize {
        self.store.map.len()
    }

    /// Validations counted against the shared overflow bucket because the table was full.
    pub fn overflowed(&self) -> u64 {
        self.store.overflowed_total.load(Ordering::Relaxed)
    }
}

/// The client address a request is limited under.
///
/// With `trusted_hops` = 0 it is the TCP peer. With N ≥ 1 proxies in front, each appending the address it saw
/// to X-Forwarded-For, the client is the Nth entry from the right: the one the outermost trusted proxy saw.
/// Entries left of it were written by the client itself and are never used. With fewer entries than N the
/// left-most is used (the request came through fewer proxies than configured); with no header, or an entry
/// that is not an IP address (a bare IP, `IP:port` or `[IPv6]:port`), the TCP peer. Several X-Forwarded-For
/// header lines count as one comma-separated list, in order. IPv6 addresses are cut to their /64.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted_hops: u32) -> IpAddr {
    let ip = match trusted_hops {
        0 => peer,
        hops => forwarded_for(headers, hops).unwrap_or(peer),
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// The `hops`th X-Forwarded-For entry from the right (the left-most if there are fewer), if it parses.
///
/// Read as bytes from the right, so whatever the client wrote left of the used entry (bytes that are not
/// text, more commas, more header lines before the proxies' own) is never decoded and cannot change which
/// entry is used: only the used entry has to be an address.
fn forwarded_for(headers: &HeaderMap, hops: u32) -> Option<IpAddr> {
    let mut left = hops.max(1);
    let mut used: Option<&[u8]> = None;
    'lines: for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        for entry in value.as_bytes().rsplit(|b| *b == b',') {
            used = Some(entry);
            left -= 1;
            if left == 0 {
                break 'lines;
            }
        }
    }
    let entry = std::str::from_utf8(used?).ok()?.trim_matches([' ', '\t']);
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::telemetry::capture::Logs;

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

    fn ip(n: u32) -> ClientKey {
        ClientKey::Addr(IpAddr::V4(Ipv4Addr::from(n)))
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
            let d = limiter.check(&a);
            assert!(d.allowed());
            assert_eq!((d.limit, d.remaining), (5, expected));
            assert_eq!(d.reset, Duration::from_secs(12) * (5 - expected));
        }
        let refused = limiter.check(&a);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(12)));
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset, Duration::from_secs(60));
        // Another client has its own bucket.
        assert_eq!(limiter.check(&ip(2)).remaining, 4);
        // One token comes back every 12 seconds.
        clock.advance(Duration::from_secs(12));
        assert!(limiter.check(&a).allowed());
        assert!(!limiter.check(&a).allowed());
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
            assert!(limiter.check(&ip(n)).allowed());
        }
        let busy = ip(u32::MAX);
        for _ in 0..5 {
            assert!(limiter.check(&busy).allowed());
        }
        assert_eq!(limiter.clients(), 100_001);
        clock.advance(Duration::from_secs(30));
        limiter.sweep();
        // The one-request clients' buckets are full again; the busy one is still refilling and must keep
        // its state, or it could burst again at once.
        assert_eq!(limiter.clients(), 1);
        assert_eq!(limiter.check(&busy).remaining, 1);
    }

    #[test]
    fn a_flood_of_distinct_clients_stays_under_the_cap() {
        // Ten times the cap: sizes small enough that a limiter sweeping on every request (a broken spacing,
        // which `..._retried_every_sixteenth_of_its_size` catches) still ends this test in seconds.
        let max = 1_000;
        let (limiter, _clock) = limiter(5, 5, max);
        let mut peak = 0;
        for n in 0..10_000 {
            limiter.check(&ip(n));
            peak = peak.max(limiter.clients());
        }
        assert!(peak <= max, "peak {peak} above the cap {max}");
        assert!(limiter.clients() > 0);
    }

    #[test]
    fn a_throttled_client_stays_throttled_while_ten_times_the_cap_of_other_keys_arrive() {
        let max = 2_000;
        let (limiter, clock) = limiter(5, 5, max);
        let attacker = ip(u32::MAX);
        for _ in 0..5 {
            assert!(limiter.check(&attacker).allowed());
        }
        assert!(!limiter.check(&attacker).allowed());
        let mut peak = 0;
        for n in 0..20_000 {
            limiter.check(&ip(n));
            // Time passes, but far less than the attacker's refill window (60 s).
            if n % 2_000 == 0 {
                clock.advance(Duration::from_millis(500));
            }
            peak = peak.max(limiter.clients());
            if n % 1_000 == 0 {
                assert!(
                    !limiter.check(&attacker).allowed(),
                    "the throttled client got a fresh bucket after {n} other keys"
                );
            }
        }
        assert!(peak <= max, "peak {peak} above the cap {max}");
        assert!(!limiter.check(&attacker).allowed());
        assert!(limiter.overflowed() > 0);
    }

    #[test]
    fn new_clients_are_served_from_the_overflow_bucket_when_the_table_is_full() {
        let (limiter, clock) = limiter(5, 5, 100);
        for n in 0..100 {
            assert!(limiter.check(&ip(n)).allowed());
        }
        // The table is full of clients that are still refilling: none can be evicted.
        let newcomer = limiter.check(&ip(1_000));
        assert!(newcomer.allowed());
        assert_eq!(limiter.clients(), 100);
        // Newcomers share one bucket of the per-client size.
        let shared: Vec<bool> = (1_001..1_010)
            .map(|n| limiter.check(&ip(n)).allowed())
            .collect();
        assert_eq!(shared.iter().filter(|ok| **ok).count(), 4, "{shared:?}");
        // Once the known clients' buckets are full again, a sweep frees room and newcomers get their own.
        clock.advance(Duration::from_secs(61));
        limiter.sweep();
        assert_eq!(limiter.clients(), 0);
        assert_eq!(limiter.check(&ip(2_000)).remaining, 4);
    }

    #[test]
    fn client_addresses_behind_trusted_proxies() {
        let peer: IpAddr = "10.0.0.9".parse().expect("ip");
        let addr = |s: &str| s.parse::<IpAddr>().expect("ip");
        let with = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(&X_FORWARDED_FOR, HeaderValue::from_static(v));
            }
            headers
        };
        // No trusted proxy: the header is ignored whatever it says.
        let forged = with(&["203.0.113.7, 198.51.100.1"]);
        assert_eq!(client_addr(peer, &forged, 0), peer);
        // One proxy (Container Apps ingress): the right-most entry, the one it appended.
        assert_eq!(client_addr(peer, &forged, 1), addr("198.51.100.1"));
        // Two proxies: the second from the right.
        assert_eq!(client_addr(peer, &forged, 2), addr("203.0.113.7"));
        // Fewer entries than hops: the left-most.
        assert_eq!(client_addr(peer, &forged, 5), addr("203.0.113.7"));
        // Several header lines are one list.
        let split = with(&["203.0.113.7", "198.51.100.1"]);
        assert_eq!(client_addr(peer, &split, 1), addr("198.51.100.1"));
        assert_eq!(client_addr(peer, &split, 2), addr("203.0.113.7"));
        // No header, or an entry that is not an address: the peer.
        assert_eq!(client_addr(peer, &HeaderMap::new(), 1), peer);
        assert_eq!(client_addr(peer, &with(&["1.2.3.4, unknown"]), 1), peer);
        // Ports and IPv6 forms; IPv6 is keyed by its /64, mapped IPv4 as IPv4.
        assert_eq!(
            client_addr(peer, &with(&["[2001:db8::1]:443"]), 1),
            addr("2001:db8::")
        );
        assert_eq!(
            client_addr(peer, &with(&["192.0.2.1:8080"]), 1),
            addr("192.0.2.1")
        );
        assert_eq!(
            client_addr(peer, &with(&["::ffff:192.0.2.1"]), 1),
            addr("192.0.2.1")
        );
        // Whitespace around an entry is optional whitespace (spaces and tabs).
        assert_eq!(
            client_addr(peer, &with(&["203.0.113.7,\t198.51.100.1 "]), 1),
            addr("198.51.100.1")
        );
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().expect("ip");
        assert_eq!(
            client_addr(v6, &HeaderMap::new(), 0),
            addr("2001:db8:1:2::")
        );
    }

    #[test]
    fn bytes_left_of_the_used_entry_never_change_the_client() {
        let peer: IpAddr = "10.0.0.9".parse().expect("ip");
        let addr = |s: &str| s.parse::<IpAddr>().expect("ip");
        let bytes = |values: &[&[u8]]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(
                    &X_FORWARDED_FOR,
                    HeaderValue::from_bytes(v).expect("obs-text is a valid header value"),
                );
            }
            headers
        };
        // What the client wrote, bytes that are not text among it, on the proxy's line.
        let one_line = bytes(&[b"\xff\xfe, 203.0.113.7\x80, 192.0.2.44, 198.51.100.1"]);
        assert_eq!(client_addr(peer, &one_line, 1), addr("198.51.100.1"));
        assert_eq!(client_addr(peer, &one_line, 2), addr("192.0.2.44"));
        // The used entry itself is not an address: the peer, as for any malformed entry.
        assert_eq!(client_addr(peer, &one_line, 3), peer);
        // The client's own header line before the one the proxy wrote.
        let own_line = bytes(&[b"\xc3\xa9\xff, 10.0.0.9", b"198.51.100.1"]);
        assert_eq!(client_addr(peer, &own_line, 1), addr("198.51.100.1"));
        assert_eq!(client_addr(peer, &own_line, 2), addr("10.0.0.9"));
        // Fewer entries than hops: the left-most is used, so it has to parse.
        assert_eq!(client_addr(peer, &bytes(&[b"\xff"]), 2), peer);
        assert_eq!(
            client_addr(peer, &bytes(&[b"\xff", b"198.51.100.1"]), 1),
            addr("198.51.100.1")
        );
    }

    /// Fills a table of `max` keys with clients that each took one token (none is full again yet).
    fn fill(limiter: &ClientLimiter<FakeRelativeClock>, max: u32) {
        for n in 0..max {
            assert!(limiter.check(&ip(n)).allowed());
        }
        assert_eq!(limiter.clients(), max as usize);
    }

    #[test]
    fn the_first_request_to_find_the_table_full_sweeps_it() {
        let (limiter, clock) = limiter(5, 5, 100);
        fill(&limiter, 100);
        assert_eq!(limiter.overflowed(), 0);
        // Every bucket is full again, but no sweep has run: the table still holds them all.
        clock.advance(Duration::from_secs(60));
        assert_eq!(limiter.clients(), 100);
        // The newcomer's request sweeps first and so gets a bucket of its own.
        assert_eq!(limiter.check(&ip(1_000)).remaining, 4);
        assert_eq!(limiter.clients(), 1);
        assert_eq!(limiter.overflowed(), 0);
    }

    /// With 100 keys at most, the inline sweep is retried after every 100 / 16 = 6 requests that found the
    /// table full, counting from the sweep that found it full.
    #[test]
    fn while_the_table_stays_full_the_inline_sweep_is_retried_every_sixteenth_of_its_size() {
        let (limiter, clock) = limiter(5, 5, 100);
        fill(&limiter, 100);
        // The first newcomer sweeps (nothing can go) and is served from the overflow bucket.
        limiter.check(&ip(1_000));
        assert_eq!((limiter.clients(), limiter.overflowed()), (100, 1));
        // Now every bucket is full again; only the next inline sweep notices.
        clock.advance(Duration::from_secs(60));
        for n in 1..=4 {
            limiter.check(&ip(1_000 + n));
            assert_eq!(
                (limiter.clients(), limiter.overflowed()),
                (100, 1 + u64::from(n)),
                "newcomer {n} after the first"
            );
        }
        // The sixth overflow request sweeps: the idle keys go and the newcomer gets its own bucket.
        assert_eq!(limiter.check(&ip(1_005)).remaining, 4);
        assert_eq!((limiter.clients(), limiter.overflowed()), (1, 5));
    }

    #[test]
    fn the_refill_window_is_the_time_an_empty_bucket_takes_to_fill() {
        let (other, _clock) = limiter(120, 10, 1000);
        assert_eq!(other.refill_window(), Duration::from_secs(5));
        let (limiter, clock) = limiter(5, 5, 1000);
        assert_eq!(limiter.refill_window(), Duration::from_secs(60));
        // Two clients empty their buckets at once.
        for client in [ip(1), ip(2)] {
            for _ in 0..5 {
                assert!(limiter.check(&client).allowed());
            }
            assert!(!limiter.check(&client).allowed());
        }
        // One instant before the window ends the first bucket is not full yet: after taking one, 3 remain ...
        clock.advance(limiter.refill_window() - Duration::from_millis(1));
        assert_eq!(limiter.check(&ip(1)).remaining, 3);
        // ... and at its end the second one is: after taking one, 4 remain, as for a new client.
        clock.advance(Duration::from_millis(1));
        assert_eq!(limiter.check(&ip(2)).remaining, 4);
        assert_eq!(limiter.check(&ip(3)).remaining, 4);
    }

    #[test]
    fn a_full_table_is_reported_once_each_time_it_fills_up() {
        let logs = Logs::default();
        let _capture = logs.capture();
        let (limiter, clock) = limiter(5, 5, 100);
        fill(&limiter, 100);
        // The first sweep to find the table full reports it; the retries while it stays full do not.
        for n in 0..20 {
            limiter.check(&ip(1_000 + n));
        }
        let full = |logs: &Logs| {
            logs.lines()
                .into_iter()
                .filter(|line| line["level"] == "WARN")
                .collect::<Vec<_>>()
        };
        let reported = full(&logs);
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert_eq!(reported[0]["clients"], 100);
        assert_eq!(reported[0]["max_clients"], 100);
        // Room again, then full again: reported again.
        clock.advance(Duration::from_secs(60));
        limiter.sweep();
        assert_eq!(limiter.clients(), 0);
        fill(&limiter, 100);
        limiter.check(&ip(1_000));
        assert_eq!(full(&logs).len(), 2);
    }

    #[test]
    fn reset_is_rounded_up_only_when_there_is_a_fraction_of_a_second() {
        for (reset, header) in [
            (Duration::ZERO, "0"),
            (Duration::from_nanos(1), "1"),
            (Duration::from_secs(60), "60"),
            (Duration::from_millis(60_001), "61"),
        ] {
            let mut headers = HeaderMap::new();
            Decision {
                limit: 5,
                remaining: 5,
                reset,
                retry_after: None,
            }
            .write_headers(&mut headers);
            assert_eq!(headers[&X_RATELIMIT_RESET], header, "{reset:?}");
        }
    }

    #[test]
    fn the_debug_form_shows_the_settings_and_the_number_of_clients() {
        let (limiter, _clock) = limiter(5, 5, 100);
        limiter.check(&ip(1));
        limiter.check(&ip(2));
        let text = format!("{limiter:?}");
        for part in [
            "ClientLimiter",
            "burst: 5",
            "interval: 12s",
            "max_clients: 100",
            "clients: 2",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }

    /// governor asks the store for its size; the store answers with its table's.
    #[test]
    fn governor_sees_the_number_of_keys_in_the_table() {
        let (limiter, clock) = limiter(5, 5, 100);
        assert!(limiter.limiter.is_empty());
        assert_eq!(limiter.limiter.len(), 0);
        limiter.check(&ip(1));
        limiter.check(&ip(2));
        assert!(!limiter.limiter.is_empty());
        assert_eq!(limiter.limiter.len(), 2);
        clock.advance(Duration::from_secs(60));
        limiter.sweep();
        assert!(limiter.limiter.is_empty());
    }

    /// After a flood of one-request clients has gone idle, a sweep gives the table's memory back.
    #[test]
    fn a_sweep_returns_the_memory_of_evicted_keys() {
        let (limiter, clock) = limiter(5, 5, 100_000);
        for n in 0..10_000 {
            limiter.check(&ip(n));
        }
        assert!(limiter.store.map.capacity() >= 10_000);
        clock.advance(Duration::from_secs(60));
        limiter.sweep();
        assert_eq!(limiter.clients(), 0);
        let capacity = limiter.store.map.capacity();
        assert!(capacity < 100, "{capacity} slots kept for no key");
    }

    /// The background sweeper runs once per refill window (60 s for one request a minute), on tokio's paused
    /// clock: a table full of active clients is swept, and so reported, at 60 s and not before.
    #[tokio::test(start_paused = true)]
    async fn the_sweeper_sweeps_once_per_refill_window() {
        let logs = Logs::default();
        let _capture = logs.capture();
        let limiter = Arc::new(
            ClientLimiter::with_clock(1, 1, 100, DefaultClock::default()).expect("limiting is on"),
        );
        assert_eq!(limiter.refill_window(), Duration::from_secs(60));
        for n in 0..100 {
            assert!(limiter.check(&ip(n)).allowed());
        }
        limiter.spawn_sweeper();
        let reported = || {
            logs.lines()
                .iter()
                .filter(|line| line["level"] == "WARN")
                .count()
        };
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(reported(), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(reported(), 1);
        assert_eq!(limiter.clients(), 100);
    }
}
