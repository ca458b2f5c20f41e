//! Caller authentication (AUTH_MODE=entra): POST validate requires a bearer token from AUTH_ISSUER (Microsoft
//! Entra ID or any OpenID Connect issuer), checked by the service itself so that it is protected on every
//! platform, not only behind Container Apps' built-in authentication.
//!
//! [`jwks`] keeps the issuer's signing keys (fetched in the background, refreshed, re-fetched on an unknown
//! `kid`); [`token`] checks one token (RS256 only, issuer, audience, lifetime); [`cache`] remembers tokens
//! whose signature was verified, so a caller's repeated token costs its claim checks and not an RSA check.
//! [`Authenticator`] puts them together for the validate handler and counts every outcome in the metrics. A refusal says only what RFC
//! 6750 lets it say; the token itself is never logged or echoed, only the calling application's id.

pub mod cache;
pub mod jwks;
pub mod token;

use std::sync::Arc;

use http::{HeaderMap, header};
use jsonwebtoken::Validation;

use crate::config::AuthConfig;
use crate::error::AuthError;
use crate::outbound::HttpClient;
use crate::telemetry::metrics::Metrics;
use cache::{Cached, TokenCache};
use jwks::{Lookup, SigningKeys};
use token::{Verified, reason};

/// An authenticated caller: the application the token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `azp` or `appid`; the rate limiter's key and the request log's `client_app`.
    pub app_id: Arc<str>,
}

/// A refused caller, with its application id when the token itself was valid (a missing role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: AuthError,
    pub app_id: Option<Arc<str>>,
}

impl From<AuthError> for Refusal {
    fn from(error: AuthError) -> Self {
        Self {
            error,
            app_id: None,
        }
    }
}

/// The calling application's id, put in a validate response's extensions so the request log line can name
/// it without the envelope knowing about tokens.
#[derive(Debug, Clone)]
pub struct CallerApp(pub Arc<str>);

/// Checks bearer tokens against the issuer's keys. One per process.
#[derive(Debug)]
pub struct Authenticator {
    keys: Arc<SigningKeys>,
    cache: TokenCache,
    validation: Validation,
    required_role: Option<String>,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// Starts fetching the issuer's keys in the background on `http` (the service's outbound client). Must
    /// be called inside the tokio runtime.
    pub fn start(
        config: &AuthConfig,
        http: HttpClient,
        metrics: Arc<Metrics>,
    ) -> Result<Self, jwks::StartError> {
        token::install_provider();
        tracing::info!(
            issuer = %config.issuer,
            audiences = %config.audiences.join(","),
            required_role = config.required_role.as_deref().unwrap_or(""),
            "caller authentication on: validations need a bearer token"
        );
        Ok(Self {
            keys: SigningKeys::start(&config.discovery_url(), http)?,
            cache: TokenCache::default(),
            validation: token::validation(config),
            required_role: config.required_role.clone(),
            metrics,
        })
    }

    /// The `auth_keys` readiness check: the issuer's keys are known.
    pub fn ready(&self) -> bool {
        self.keys.ready()
    }

    /// Checks the request's bearer token and records the outcome in the metrics.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let result = self.check(headers).await;
        self.metrics.auth_outcome(match &result {
            Ok(_) => "success",
            Err(refusal) => refusal.error.outcome(),
        });
        result
    }

    async fn check(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let token = bearer_token(headers)?;
        let now = token::now();
        let cached;
        let verified = match self.cached(token, now) {
            Some(Ok(entry)) => {
                cached = entry;
                &cached.verified
            }
            Some(Err(reason)) => return Err(AuthError::Invalid { reason }.into()),
            None => &self.verify(token_text(token)?, now).await?,
        };
        if let Some(role) = &self.required_role
            && !verified.roles.iter().any(|r| r == role)
        {
            return Err(Refusal {
                error: AuthError::Forbidden,
                app_id: Some(Arc::clone(&verified.app_id)),
            });
        }
        Ok(Caller {
            app_id: Arc::clone(&verified.app_id),
        })
    }

    /// The cached verification of `token`, with its claims checked again at `now`. `None` sends the token to
    /// a full verification: it is not cached, or the key set no longer holds the key that verified it under
    /// its `kid` (it left the JWKS or was replaced), in which case the token is dropped from the cache and
    /// the full path refuses it like any token signed by an unknown key.
    fn cached(&self, token: &[u8], now: u64) -> Option<Result<Arc<Cached>, &'static str>> {
        let entry = self.cache.get(token, now)?;
        if !self.keys.holds(&entry.kid, |key| entry.signed_by(key)) {
            self.cache.remove(token);
            return None;
        }
        Some(token::recheck(&entry.registered, &self.validation, now).map(|()| entry))
    }

    /// Verifies `token` in full (its key, its signature, its claims) and caches what that established.
    async fn verify(&self, token: &str, now: u64) -> Result<Verified, AuthError> {
        let invalid = |reason| AuthError::Invalid { reason };
        let kid = token::key_id(token).map_err(invalid)?;
        let key = match self.keys.lookup(&kid) {
            Lookup::NotLoaded => return Err(AuthError::Unavailable),
            Lookup::Found(key) => key,
            Lookup::Unknown => {
                self.keys.refresh_for_unknown_kid(&kid).await;
                match self.keys.lookup(&kid) {
                    Lookup::Found(key) => key,
                    _ => return Err(invalid(reason::UNKNOWN_KEY)),
                }
            }
        };
        let verified = token::verify(token, &key, &self.validation).map_err(invalid)?;
        if let Some(registered) = verified.registered.clone() {
            let cached = Cached {
                kid,
                key,
                registered,
                verified: verified.clone(),
            };
            self.cache.insert(token.as_bytes(), cached, now);
        }
        Ok(verified)
    }
}

/// The token of an `Authorization: Bearer <token>` header, as bytes: a cached token is found by them, and only
/// a token that is not cached is read as text ([`token_text`]). No header, another scheme or an empty token is
/// [`AuthError::Missing`]; several Authorization headers are a refused token, since a client that sent them
/// did try to authenticate.
fn bearer_token(headers: &HeaderMap) -> Result<&[u8], AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    let malformed = AuthError::Invalid {
        reason: reason::MALFORMED,
    };
    if values.next().is_some() {
        return Err(malformed);
    }
    let bytes = value.as_bytes();
    let is_bearer = bytes
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "));
    if !is_bearer {
        return Err(AuthError::Missing);
    }
    let mut token = bytes.get(7..).unwrap_or_default();
    while let [b' ', rest @ ..] = token {
        token = rest;
    }
    while let [rest @ .., b' '] = token {
        token = rest;
    }
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// A token that is not visible ASCII is refused; what a header value may otherwise hold (tabs, obs-text) is
/// never part of a JWT. Only tokens that passed this are cached, so a token found in the cache needs no check.
fn token_text(token: &[u8]) -> Result<&str, AuthError> {
    let malformed = AuthError::Invalid {
        reason: reason::MALFORMED,
    };
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err(malformed);
    }
    std::str::from_utf8(token).map_err(|_| malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(values: &[&'static [u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(value).expect("a header value"),
            );
        }
        headers
    }

    #[test]
    fn bearer_tokens_are_read_from_one_authorization_header() {
        assert_eq!(bearer_token(&with(&[b"Bearer abc"])), Ok(&b"abc"[..]));
        assert_eq!(bearer_token(&with(&[b"bearer  abc "])), Ok(&b"abc"[..]));
        assert_eq!(bearer_token(&with(&[b"BEARER a b"])), Ok(&b"a b"[..]));
        assert_eq!(bearer_token(&with(&[])), Err(AuthError::Missing));
        assert_eq!(
            bearer_token(&with(&[b"Basic dXNlcjpwYXNz"])),
            Err(AuthError::Missing)
        );
        assert_eq!(bearer_token(&with(&[b"Bearer"])), Err(AuthError::Missing));
        assert_eq!(bearer_token(&with(&[b"Bearer  "])), Err(AuthError::Missing));
        assert_eq!(
            bearer_token(&with(&[b"Bearerabc"])),
            Err(AuthError::Missing)
        );
        let malformed = Err(AuthError::Invalid {
            reason: reason::MALFORMED,
        });
        assert_eq!(bearer_token(&with(&[b"Bearer a", b"Bearer b"])), malformed);
    }

    #[test]
    fn only_a_visible_ascii_token_is_read_as_text() {
        assert_eq!(token_text(b"eyJ0.eyJz.c2ln-_"), Ok("eyJ0.eyJz.c2ln-_"));
        let malformed = Err(AuthError::Invalid {
            reason: reason::MALFORMED,
        });
        for token in [&b"a b"[..], b"a\tb", b"\xff\xfe", b"a\x7f", b"a\x1f"] {
            assert_eq!(token_text(token), malformed, "{token:?}");
        }
    }

    /// The cache's whole point: a token seen before is answered from what its first verification
    /// established, without verifying it again. The entry is swapped for one naming another application, so
    /// the answer shows which road it took.
    #[tokio::test]
    async fn a_cached_token_is_answered_from_the_cache_without_a_second_verification() {
        use serde_json::json;
        use testkit::openid::{FakeIssuer, TestSigner, now};

        let signer = TestSigner::from_pem(
            "key-1",
            include_str!("../../tests/fixtures/jwt-signing-key-1.pem"),
        );
        let issuer = FakeIssuer::start(vec![signer.jwk()]).await;
        let config = AuthConfig {
            issuer: issuer.issuer(),
            audiences: vec!["api://applicant-validator".to_owned()],
            required_role: None,
        };
        token::install_provider();
        let auth = Authenticator {
            keys: jwks::tests::keys_of(&issuer).await,
            cache: TokenCache::default(),
            validation: token::validation(&config),
            required_role: None,
            metrics: Arc::new(Metrics::new()),
        };
        let claims = json!({
            "iss": issuer.issuer(),
            "aud": "api://applicant-validator",
            "nbf": now() - 10,
            "exp": now() + 3600,
            "azp": "app-one",
        });
        let token = signer.sign(&signer.header(), &claims);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value"),
        );
        let caller = auth.authenticate(&headers).await.expect("a valid token");
        assert_eq!(&*caller.app_id, "app-one");

        let at = token::now();
        let first = auth
            .cache
            .get(token.as_bytes(), at)
            .expect("verified tokens are cached");
        let Lookup::Found(key) = auth.keys.lookup("key-1") else {
            panic!("the issuer's key is known");
        };
        let swapped = Cached {
            kid: "key-1".to_owned(),
            key,
            registered: first.registered.clone(),
            verified: Verified {
                app_id: Arc::from("from-the-cache"),
                roles: Vec::new(),
                registered: None,
            },
        };
        auth.cache.insert(token.as_bytes(), swapped, at);
        let caller = auth.authenticate(&headers).await.expect("still valid");
        assert_eq!(&*caller.app_id, "from-the-cache");
    }
}
