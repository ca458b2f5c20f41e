//! Tokens whose signature has been verified, remembered so that a caller's next request with the same token
//! skips the RSA check, as Envoy's `jwt_authn` filter does. The signature is most of what a token costs; a
//! client sends the same token for its whole lifetime (an hour with Entra), so nearly every validation can
//! skip it.
//!
//! What the cache may and may not decide:
//! - It is keyed by the token's exact bytes. The map hashes a token's length and its last [`HASHED_TAIL`]
//!   bytes (the end of its signature) with the standard library's SipHash under a key drawn at random per
//!   process ([`RandomState`]). Only tokens with a valid signature get in, so the ends of the tokens held
//!   differ like signatures do, and an outsider cannot aim tokens at one bucket. The hash only picks the
//!   bucket: the whole token is stored and compared ([`same_bytes`]), so a token that differs in any byte is
//!   never taken for a cached one.
//! - A hit costs a few hundred instructions on an Entra-sized token. Hashing all of a 1.3 KB token took
//!   3,600 per validation, and comparing it with musl's `memcmp`, a byte at a time, 11,800
//!   (docs/benchmarks.md).
//! - It never answers on its own: [`super::Authenticator`] checks on every hit that the issuer's key set
//!   still holds the same key under the token's `kid`, and runs every claim check except the signature
//!   ([`super::token::recheck`] and the role).
//! - It holds a token only while its `exp` (plus the leeway the claim checks allow) has not passed, at most
//!   [`MAX_ENTRIES`] tokens and [`MAX_BYTES`] of them; only tokens with a valid signature get in.

use std::collections::hash_map::RandomState;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use hashbrown::{Equivalent, HashMap};

use jsonwebtoken::{DecodingKey, DecodingKeyKind};

use super::token::{LEEWAY_SECS, Registered, Verified};

/// Most tokens held. A process sees a few client applications, each renewing its token about hourly, so this
/// is far above a normal working set; it bounds what a flood of distinct valid tokens can hold.
pub const MAX_ENTRIES: usize = 1024;

/// Most token bytes held (Entra's access tokens are 1–3 KB): 2 MiB, a few hundred of the longest tokens.
pub const MAX_BYTES: usize = 2 * 1024 * 1024;

/// How many of a token's last bytes the map hashes, with its length: 192 bits of an RS256 signature.
pub const HASHED_TAIL: usize = 32;

/// What one verification of a token established.
#[derive(Debug)]
pub struct Cached {
    /// The `kid` of the key that verified the signature.
    pub kid: String,
    /// That key, so a key replaced under the same `kid` is not taken for the one that verified.
    pub key: DecodingKey,
    /// The claims checked again on every hit.
    pub registered: Registered,
    pub verified: Verified,
}

impl Cached {
    /// True if `current` (the key set's key under [`Cached::kid`] now) is the key that verified the token.
    /// Both are RSA keys: the key set holds nothing else (`jwks`), and tokens are RS256 only.
    pub fn signed_by(&self, current: &DecodingKey) -> bool {
        match (self.key.kind(), current.kind()) {
            (
                DecodingKeyKind::RsaModulusExponent { n, e },
                DecodingKeyKind::RsaModulusExponent { n: n2, e: e2 },
            ) => same_bytes(n, n2) && same_bytes(e, e2),
            _ => false,
        }
    }

    /// The second after which the claim checks refuse the token as expired, so the cache lets it go.
    fn expires_after(&self) -> u64 {
        self.registered.exp.saturating_add(LEEWAY_SECS)
    }
}

/// Verified tokens, shared by every worker of the process.
#[derive(Debug)]
pub struct TokenCache {
    inner: RwLock<Inner>,
    max_entries: usize,
    max_bytes: usize,
}

/// A cached token's bytes, the map's key.
#[derive(Debug, Clone)]
struct Token(Box<[u8]>);

/// A token looked up, as the request holds it: compared with [`Token`]s without being copied into one.
struct TokenRef<'a>(&'a [u8]);

/// What [`Token`] and [`TokenRef`] hash alike: the length and the last [`HASHED_TAIL`] bytes.
fn hash_token<H: Hasher>(bytes: &[u8], state: &mut H) {
    state.write_usize(bytes.len());
    state.write(
        bytes
            .get(bytes.len().saturating_sub(HASHED_TAIL)..)
            .unwrap_or_default(),
    );
}

impl Hash for Token {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_token(&self.0, state);
    }
}

impl Hash for TokenRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_token(self.0, state);
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        same_bytes(&self.0, &other.0)
    }
}

impl Eq for Token {}

impl Equivalent<Token> for TokenRef<'_> {
    fn equivalent(&self, key: &Token) -> bool {
        same_bytes(self.0, &key.0)
    }
}

/// `a == b`, sixteen bytes at a time and through to the end whatever it finds, where the standard library's
/// slice comparison calls musl's `memcmp`, which compares a byte per step. A property test checks it against
/// `==`.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(16), b.chunks_exact(16));
    let rest_same = a_words.remainder() == b_words.remainder();
    let differing = a_words
        .zip(b_words)
        .fold(0, |bits, (x, y)| bits | (word(x) ^ word(y)));
    rest_same && differing == 0
}

/// Sixteen bytes as one number (`chunks_exact(16)` gives only those).
fn word(bytes: &[u8]) -> u128 {
    u128::from_ne_bytes(bytes.try_into().unwrap_or_default())
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Token, Arc<Cached>, RandomState>,
    /// The summed length of the tokens in `entries`.
    bytes: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::with_bounds(MAX_ENTRIES, MAX_BYTES)
    }
}

impl TokenCache {
    fn with_bounds(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            max_entries,
            max_bytes,
        }
    }

    /// The verification of exactly `token`, unless none is held or its `exp` has passed at `now` (seconds
    /// since the Unix epoch); an expired one is dropped.
    pub fn get(&self, token: &[u8], now: u64) -> Option<Arc<Cached>> {
        let found = {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            Arc::clone(inner.entries.get(&TokenRef(token))?)
        };
        if found.expires_after() < now {
            self.remove(token);
            return None;
        }
        Some(found)
    }

    /// Remembers `cached` for `token`, unless it is already expired at `now` or longer than the cache holds.
    /// When the cache is full, expired tokens go first, then those that expire soonest.
    pub fn insert(&self, token: &[u8], cached: Cached, now: u64) {
        if cached.expires_after() < now || token.len() > self.max_bytes {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner
            .entries
            .insert(Token(token.into()), Arc::new(cached))
            .is_none()
        {
            inner.bytes += token.len();
        }
        while inner.entries.len() > self.max_entries || inner.bytes > self.max_bytes {
            // The soonest to expire goes, so expired tokens go first. A linear scan, only when full: at most
            // MAX_ENTRIES entries, and only after a verification, which costs far more.
            let soonest = inner
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.expires_after())
                .map(|(key, _)| key.clone());
            match soonest {
                Some(key) => inner.remove(&key.0),
                None => break,
            }
        }
    }

    /// Forgets `token` (its key left the key set, or a claim check refused it).
    pub fn remove(&self, token: &[u8]) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    #[cfg(test)]
    fn len_and_bytes(&self) -> (usize, usize) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        (inner.entries.len(), inner.bytes)
    }
}

impl Inner {
    fn remove(&mut self, token: &[u8]) {
        if self.entries.remove(&TokenRef(token)).is_some() {
            self.bytes -= token.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(exp: u64) -> Cached {
        Cached {
            kid: "k1".into(),
            key: DecodingKey::from_rsa_raw_components(&[0xc3; 256], &[1, 0, 1]),
            registered: Registered {
                iss: vec!["https://issuer.test/v2.0".into()],
                aud: vec!["api://a".into()],
                exp,
                nbf: None,
            },
            verified: Verified {
                app_id: Arc::from("app"),
                roles: Vec::new(),
                registered: None,
            },
        }
    }

    #[test]
    fn only_the_exact_token_is_found() {
        let cache = TokenCache::default();
        cache.insert(b"head.claims.signature", cached(1_000), 100);
        assert!(cache.get(b"head.claims.signature", 100).is_some());
        // The same header and claims with another signature, or one byte more or less, are other tokens.
        assert!(cache.get(b"head.claims.signaturf", 100).is_none());
        assert!(cache.get(b"head.claims.signatur", 100).is_none());
        assert!(cache.get(b"head.claims.signature.", 100).is_none());
    }

    #[test]
    fn a_token_is_let_go_once_its_exp_and_the_leeway_have_passed() {
        let cache = TokenCache::default();
        cache.insert(b"t", cached(1_000), 100);
        assert!(cache.get(b"t", 1_000 + LEEWAY_SECS).is_some());
        assert!(cache.get(b"t", 1_001 + LEEWAY_SECS).is_none());
        assert_eq!(
            cache.len_and_bytes(),
            (0, 0),
            "the expired token is dropped"
        );
        assert!(cache.get(b"t", 100).is_none(), "and stays gone");
        // One already expired is not taken in; one in its last second is, as `get` still answers with it.
        cache.insert(b"late", cached(1_000), 1_001 + LEEWAY_SECS);
        assert_eq!(cache.len_and_bytes(), (0, 0));
        cache.insert(b"just", cached(1_000), 1_000 + LEEWAY_SECS);
        assert_eq!(cache.len_and_bytes(), (1, 4));
    }

    #[test]
    fn the_cache_stays_within_its_entry_bound_dropping_the_soonest_to_expire() {
        let cache = TokenCache::with_bounds(8, MAX_BYTES);
        for i in 0..100u64 {
            // Token i expires at 10_000 + i, except token 50, which lives longest.
            let exp = if i == 50 { 1_000_000 } else { 10_000 + i };
            cache.insert(format!("token-{i:03}").as_bytes(), cached(exp), 100);
            assert!(cache.len_and_bytes().0 <= 8);
        }
        assert_eq!(cache.len_and_bytes(), (8, 8 * "token-000".len()));
        assert!(cache.get(b"token-050", 100).is_some());
        assert!(cache.get(b"token-099", 100).is_some());
        assert!(cache.get(b"token-000", 100).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_byte_bound_and_expired_tokens_go_first() {
        let cache = TokenCache::with_bounds(MAX_ENTRIES, 1_000);
        cache.insert("x".repeat(1_001).as_bytes(), cached(5_000), 100);
        assert_eq!(cache.len_and_bytes(), (0, 0), "longer than the whole cache");
        cache.insert("a".repeat(400).as_bytes(), cached(200), 100);
        cache.insert("b".repeat(400).as_bytes(), cached(5_000), 100);
        assert_eq!(cache.len_and_bytes(), (2, 800));
        // At 300 + leeway, "a..." has expired: it makes room for "c...", and "b..." stays.
        cache.insert("c".repeat(400).as_bytes(), cached(6_000), 300 + LEEWAY_SECS);
        assert_eq!(cache.len_and_bytes(), (2, 800));
        assert!(cache.get("b".repeat(400).as_bytes(), 300).is_some());
        assert!(cache.get("c".repeat(400).as_bytes(), 300).is_some());
        // Inserting the same token again replaces it without counting its bytes twice.
        cache.insert("c".repeat(400).as_bytes(), cached(7_000), 300);
        assert_eq!(cache.len_and_bytes(), (2, 800));
    }

    #[test]
    fn by_default_the_cache_holds_1024_tokens_of_2_kb_within_its_2_mib() {
        let cache = TokenCache::default();
        // 1,024 tokens of 2,000 bytes are 2,048,000 bytes: under 2 MiB, so the entry bound is the one met.
        for i in 0..1_024u64 {
            cache.insert(
                format!("{}{i:04}", "t".repeat(1_996)).as_bytes(),
                cached(10_000 + i),
                100,
            );
        }
        assert_eq!(cache.len_and_bytes(), (1_024, 2_048_000));
        cache.insert("u".repeat(2_000).as_bytes(), cached(20_000), 100);
        assert_eq!(cache.len_and_bytes(), (1_024, 2_048_000));
        // A token of 2 MiB fits alone; a byte more never gets in.
        let cache = TokenCache::default();
        cache.insert(
            "v".repeat(2 * 1024 * 1024 + 1).as_bytes(),
            cached(10_000),
            100,
        );
        assert_eq!(cache.len_and_bytes(), (0, 0));
        cache.insert("v".repeat(2 * 1024 * 1024).as_bytes(), cached(10_000), 100);
        assert_eq!(cache.len_and_bytes(), (1, 2 * 1024 * 1024));
    }

    #[test]
    fn tokens_that_end_alike_are_still_told_apart() {
        // Same length and the same last HASHED_TAIL bytes: one bucket, three different tokens.
        let tail = "s".repeat(HASHED_TAIL);
        let (a, b, c) = (
            format!("a.{tail}"),
            format!("b.{tail}"),
            format!("c.{tail}"),
        );
        let cache = TokenCache::default();
        cache.insert(a.as_bytes(), cached(1_000), 100);
        cache.insert(b.as_bytes(), cached(2_000), 100);
        assert_eq!(cache.len_and_bytes(), (2, a.len() + b.len()));
        let exp = |token: &str| cache.get(token.as_bytes(), 100).map(|e| e.registered.exp);
        assert_eq!(exp(&a), Some(1_000));
        assert_eq!(exp(&b), Some(2_000));
        assert_eq!(exp(&c), None);
        cache.remove(c.as_bytes());
        assert_eq!(
            cache.len_and_bytes().0,
            2,
            "removing another token removes nothing"
        );
        cache.remove(a.as_bytes());
        assert_eq!((exp(&a), exp(&b)), (None, Some(2_000)));
    }

    /// The map finds a token by its hash, so a token and its lookup must hash alike; and tokens that end
    /// differently must not all share one hash, or every lookup would compare every token held.
    #[test]
    fn a_token_hashes_by_its_length_and_its_end() {
        fn hash(value: impl Hash) -> u64 {
            let mut hasher = std::hash::DefaultHasher::new();
            value.hash(&mut hasher);
            hasher.finish()
        }
        let token = |text: String| Token(text.into_bytes().into_boxed_slice());
        let tail = "s".repeat(HASHED_TAIL);
        let (a, b) = (format!("a.{tail}"), format!("b.{tail}"));
        assert_eq!(hash(token(a.clone())), hash(TokenRef(a.as_bytes())));
        assert_eq!(
            hash(token(a.clone())),
            hash(token(b.clone())),
            "only the end counts"
        );
        assert_ne!(hash(token(a.clone())), hash(token(format!("{a}!"))));
        assert_ne!(hash(token(format!("{a}1"))), hash(token(format!("{a}2"))));
        assert_ne!(hash(TokenRef(b"x")), hash(TokenRef(b"y")));
    }

    proptest::proptest! {
        #[test]
        fn same_bytes_is_slice_equality(
            a in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            flip in proptest::option::of((0usize..80, 1u8..=255)),
            cut in 0usize..3,
        ) {
            // b is a, or a with one byte changed, or a one or two bytes shorter.
            let mut b = a.clone();
            if let Some((at, bits)) = flip
                && let Some(byte) = b.get_mut(at)
            {
                *byte ^= bits;
            }
            b.truncate(b.len().saturating_sub(cut));
            proptest::prop_assert_eq!(same_bytes(&a, &b), a == b);
            proptest::prop_assert_eq!(same_bytes(&b, &a), a == b);
        }
    }

    #[test]
    fn a_key_counts_as_the_signer_only_if_it_is_the_same_key() {
        let entry = cached(1_000);
        let same = DecodingKey::from_rsa_raw_components(&[0xc3; 256], &[1, 0, 1]);
        let other = DecodingKey::from_rsa_raw_components(&[0xc4; 256], &[1, 0, 1]);
        let mut last = [0xc3; 256];
        last[255] = 0xc2;
        let last = DecodingKey::from_rsa_raw_components(&last, &[1, 0, 1]);
        let exponent = DecodingKey::from_rsa_raw_components(&[0xc3; 256], &[1, 0, 0]);
        assert!(entry.signed_by(&same));
        assert!(!entry.signed_by(&other));
        assert!(
            !entry.signed_by(&last),
            "the modulus differs in its last byte"
        );
        assert!(!entry.signed_by(&exponent), "the exponent differs");
    }
}
