//! Checking one bearer token: RS256 only, against a key from the issuer's JWKS, then `iss`, `aud`, `exp` and
//! `nbf` (60 s leeway), and who the calling application is. [`recheck`] runs the same claim checks again, without
//! the signature, for a token the cache ([`super::cache`]) already verified.
//!
//! The claim checks are jsonwebtoken's; the signature check is ring's, the crypto the binary already carries
//! for TLS, plugged into jsonwebtoken as its process-wide [`CryptoProvider`]. That provider verifies RS256 and
//! nothing else and cannot sign, so even a caller who got past the algorithm checks below could not have a
//! token verified with HMAC over a public key or with no signature at all.

use std::sync::Arc;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey, Validation, signature};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::config::AuthConfig;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;

/// Longest token considered: Entra's access tokens are 1–3 KB; anything far larger is not one.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Longest application id kept as a rate-limit key and logged (Entra's are 36-character GUIDs).
const MAX_APP_ID_BYTES: usize = 128;

/// What a verified token says about its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `azp` (v2 tokens) or `appid` (v1 tokens): the calling application's client id.
    pub app_id: Arc<str>,
    /// The app roles granted to the caller (`roles`).
    pub roles: Vec<String>,
    /// The claims [`recheck`] checks again on every later use of the token; `None` when one of them has a
    /// form jsonwebtoken accepts but this module does not read (a fractional `exp`, say): such a token is
    /// not cached, so it is verified in full every time.
    pub registered: Option<Registered>,
}

/// A verified token's `iss`, `aud`, `exp` and `nbf`, as [`recheck`] needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub iss: Vec<String>,
    pub aud: Vec<String>,
    pub exp: u64,
    pub nbf: Option<u64>,
}

/// The claims read beyond those jsonwebtoken checks itself, and the registered claims again for the cache.
/// The latter are read leniently (any JSON value parses), so that reading them never refuses a token that
/// jsonwebtoken's own checks accept.
#[derive(Deserialize)]
struct Claims {
    azp: Option<String>,
    appid: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    iss: Option<Strings>,
    aud: Option<Strings>,
    exp: Option<Seconds>,
    nbf: Option<Seconds>,
}

/// A string claim that may also be an array of strings (`aud` and, for jsonwebtoken, `iss`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Strings {
    One(String),
    Many(Vec<String>),
    Other(IgnoredAny),
}

/// A NumericDate claim; only whole seconds are read.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Whole(u64),
    Other(IgnoredAny),
}

impl Strings {
    fn into_vec(self) -> Option<Vec<String>> {
        match self {
            Strings::One(one) => Some(vec![one]),
            Strings::Many(many) => Some(many),
            Strings::Other(_) => None,
        }
    }
}

impl Seconds {
    fn whole(self) -> Option<u64> {
        match self {
            Seconds::Whole(secs) => Some(secs),
            Seconds::Other(_) => None,
        }
    }
}

impl Claims {
    /// The registered claims, when every one present has a form [`recheck`] reads and the required ones
    /// (`iss`, `aud`, `exp`) are there.
    fn registered(&mut self) -> Option<Registered> {
        let nbf = match self.nbf.take() {
            None => None,
            Some(nbf) => Some(nbf.whole()?),
        };
        Some(Registered {
            iss: self.iss.take()?.into_vec()?,
            aud: self.aud.take()?.into_vec()?,
            exp: self.exp.take()?.whole()?,
            nbf,
        })
    }
}

/// The fixed reason labels of [`crate::error::AuthError::Invalid`], as logs and metrics show them.
pub mod reason {
    pub const MALFORMED: &str = "malformed";
    pub const ALGORITHM: &str = "algorithm";
    pub const UNKNOWN_KEY: &str = "unknown_key";
    pub const SIGNATURE: &str = "signature";
    pub const ISSUER: &str = "issuer";
    pub const AUDIENCE: &str = "audience";
    pub const EXPIRED: &str = "expired";
    pub const NOT_YET_VALID: &str = "not_yet_valid";
    pub const NO_CLIENT: &str = "no_client";
}

/// The claim checks for tokens of `config`'s issuer and audiences.
pub fn validation(config: &AuthConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.set_issuer(&[config.issuer.as_str()]);
    validation.set_audience(&config.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation
}

/// Reads the key id from a token's header without trusting anything in it yet. Only a compact JWS of three
/// base64url parts whose header says RS256 and names a `kid` gets further.
pub fn key_id(token: &str) -> Result<String, &'static str> {
    let shape_ok = token.len() <= MAX_TOKEN_BYTES
        && token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !shape_ok {
        return Err(reason::MALFORMED);
    }
    // A header naming an algorithm jsonwebtoken does not know ("none" among them) does not parse at all, so
    // it counts as malformed rather than as a wrong algorithm; either way it is refused here.
    let header = jsonwebtoken::decode_header(token).map_err(|_| reason::MALFORMED)?;
    if header.alg != Algorithm::RS256 {
        return Err(reason::ALGORITHM);
    }
    header.kid.ok_or(reason::UNKNOWN_KEY)
}

/// Verifies `token`'s signature with `key` and its claims against `validation`.
pub fn verify(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Verified, &'static str> {
    install_provider();
    let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| refusal(&e))?;
    let mut claims = data.claims;
    let registered = claims.registered();
    let app_id = claims
        .azp
        .filter(|a| !a.is_empty())
        .or(claims.appid)
        .filter(|a| {
            (1..=MAX_APP_ID_BYTES).contains(&a.len()) && a.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or(reason::NO_CLIENT)?;
    Ok(Verified {
        app_id: Arc::from(app_id),
        roles: claims.roles,
        registered,
    })
}

/// Seconds since the Unix epoch, from the clock jsonwebtoken checks `exp` and `nbf` against.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The claim checks of [`verify`] without the signature, at `now`, for a token whose signature was verified
/// before: the same rules as jsonwebtoken's (`exp` and `nbf` with `validation.leeway`, `iss` one of
/// `validation.iss`, `aud` naming one of `validation.aud`), so a cached token is refused exactly when a fresh
/// verification would refuse it on its claims.
pub fn recheck(claims: &Registered, validation: &Validation, now: u64) -> Result<(), &'static str> {
    if validation.validate_exp && claims.exp < now.saturating_sub(validation.leeway) {
        return Err(reason::EXPIRED);
    }
    if validation.validate_nbf
        && claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(validation.leeway))
    {
        return Err(reason::NOT_YET_VALID);
    }
    if let Some(issuers) = &validation.iss
        && !claims.iss.iter().any(|iss| issuers.contains(iss))
    {
        return Err(reason::ISSUER);
    }
    if validation.validate_aud {
        let named = validation
            .aud
            .as_ref()
            .is_some_and(|audiences| claims.aud.iter().any(|aud| audiences.contains(aud)));
        if !named {
            return Err(reason::AUDIENCE);
        }
    }
    Ok(())
}

fn refusal(error: &JwtError) -> &'static str {
    match error.kind() {
        ErrorKind::InvalidSignature => reason::SIGNATURE,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => reason::ALGORITHM,
        ErrorKind::ExpiredSignature => reason::EXPIRED,
        ErrorKind::ImmatureSignature => reason::NOT_YET_VALID,
        ErrorKind::InvalidIssuer => reason::ISSUER,
        ErrorKind::InvalidAudience => reason::AUDIENCE,
        _ => reason::MALFORMED,
    }
}

/// Makes ring the signature check behind jsonwebtoken. Installing is first-come for the whole process; no
/// other code here installs one, so ours is always the one in force.
pub fn install_provider() {
    let _ = RING_RS256.install_default();
}

/// jsonwebtoken's crypto on ring: RS256 verification only.
static RING_RS256: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: rs256_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(unsupported()),
        rsa_pub_components_from_public_key: |_| Err(unsupported()),
        ec_pub_components_from_private_key: |_, _| -> Result<(EllipticCurve, _, _), _> {
            Err(unsupported())
        },
        ed_pub_components_from_private_key: |_, _| Err(unsupported()),
        compute_digest: |_, _: ThumbprintHash| Err(unsupported()),
    },
};

fn unsupported() -> JwtError {
    ErrorKind::UnsupportedAlgorithm.into()
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    Err(unsupported())
}

fn rs256_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    match (algorithm, key.kind()) {
        (Algorithm::RS256, DecodingKeyKind::RsaModulusExponent { n, e }) => Ok(Box::new(Rs256 {
            n: n.clone(),
            e: e.clone(),
        })),
        _ => Err(unsupported()),
    }
}

/// An RSA public key from the JWKS, checked with RSASSA-PKCS1-v1_5 over SHA-256 (keys of 2048 bits or more).
struct Rs256 {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl signature::Verifier<Vec<u8>> for Rs256 {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        ring::signature::RsaPublicKeyComponents {
            n: &self.n,
            e: &self.e,
        }
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            message,
            signature,
        )
        .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Rs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rs256_headers_with_a_key_id_get_through() {
        // {"alg":"RS256","kid":"k1"} . {} . sig
        assert_eq!(
            key_id("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.c2ln"),
            Ok("k1".to_string())
        );
        // {"alg":"none"}
        assert!(key_id("eyJhbGciOiJub25lIn0.e30.c2ln").is_err());
        // {"alg":"HS256","kid":"k1"}
        assert_eq!(
            key_id("eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0.e30.c2ln"),
            Err(reason::ALGORITHM)
        );
        // {"alg":"RS256"} without a kid
        assert_eq!(
            key_id("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"),
            Err(reason::UNKNOWN_KEY)
        );
        for garbage in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "a b.c.d",
            "é.e30.c2ln",
            "e30.e30.e30",
        ] {
            assert_eq!(key_id(garbage), Err(reason::MALFORMED), "{garbage:?}");
        }
        // Up to 16 KiB is looked at; a byte more is not a token.
        let padded = |len: usize| {
            let head = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.";
            format!("{head}{}", "s".repeat(len - head.len()))
        };
        assert_eq!(key_id(&padded(MAX_TOKEN_BYTES)), Ok("k1".to_string()));
        assert_eq!(key_id(&padded(MAX_TOKEN_BYTES + 1)), Err(reason::MALFORMED));
        assert_eq!(MAX_TOKEN_BYTES, 16_384);
    }

    #[test]
    fn the_provider_verifies_nothing_but_rs256_with_rsa_components() {
        install_provider();
        let hmac = DecodingKey::from_secret(b"public key bytes").expect("an HMAC key");
        assert!(rs256_verifier(&Algorithm::HS256, &hmac).is_err());
        assert!(rs256_verifier(&Algorithm::RS256, &hmac).is_err());
        let rsa = DecodingKey::from_rsa_raw_components(&[0xc3; 256], &[1, 0, 1]);
        assert!(rs256_verifier(&Algorithm::RS384, &rsa).is_err());
        let verifier = rs256_verifier(&Algorithm::RS256, &rsa).expect("an RS256 verifier");
        assert!(verifier.verify(b"message", &vec![0u8; 256]).is_err());
    }

    #[test]
    fn verify_on_its_own_refuses_any_algorithm_but_rs256_as_an_algorithm_refusal() {
        // Callers run key_id first, but verify must not depend on it: a header naming another algorithm is
        // refused by jsonwebtoken's algorithm check, before any signature is looked at, and reported as such.
        let rsa = DecodingKey::from_rsa_raw_components(&[0xc3; 256], &[1, 0, 1]);
        let validation = validation(&config());
        // {"alg":"HS256","kid":"k1"} . {} . sig
        let hs256 = "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0.e30.c2ln";
        assert_eq!(verify(hs256, &rsa, &validation), Err(reason::ALGORITHM));
        // {"alg":"RS256","kid":"k1"} . {} . sig: the algorithm is right, the signature is not.
        let rs256 = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.c2ln";
        assert_eq!(verify(rs256, &rsa, &validation), Err(reason::SIGNATURE));
    }

    fn config() -> AuthConfig {
        AuthConfig {
            issuer: "https://issuer.test/v2.0".into(),
            audiences: vec!["api://a".into(), "api://b".into()],
            required_role: None,
        }
    }

    fn registered() -> Registered {
        Registered {
            iss: vec!["https://issuer.test/v2.0".into()],
            aud: vec!["api://b".into()],
            exp: 1_000,
            nbf: Some(500),
        }
    }

    #[test]
    fn a_recheck_applies_the_lifetime_with_the_leeway_and_the_issuer_and_audience() {
        let validation = validation(&config());
        let good = registered();
        assert_eq!(recheck(&good, &validation, 700), Ok(()));
        // exp and nbf each hold for LEEWAY_SECS past their moment, and not one second more.
        assert_eq!(recheck(&good, &validation, 1_000 + LEEWAY_SECS), Ok(()));
        assert_eq!(
            recheck(&good, &validation, 1_001 + LEEWAY_SECS),
            Err(reason::EXPIRED)
        );
        assert_eq!(recheck(&good, &validation, 500 - LEEWAY_SECS), Ok(()));
        assert_eq!(
            recheck(&good, &validation, 499 - LEEWAY_SECS),
            Err(reason::NOT_YET_VALID)
        );
        let no_nbf = Registered {
            nbf: None,
            ..good.clone()
        };
        assert_eq!(recheck(&no_nbf, &validation, 0), Ok(()));
        let other_issuer = Registered {
            iss: vec!["https://other.test/v2.0".into()],
            ..good.clone()
        };
        assert_eq!(
            recheck(&other_issuer, &validation, 700),
            Err(reason::ISSUER)
        );
        let other_audience = Registered {
            aud: vec!["api://c".into()],
            ..good.clone()
        };
        assert_eq!(
            recheck(&other_audience, &validation, 700),
            Err(reason::AUDIENCE)
        );
        let one_of_several = Registered {
            aud: vec!["api://c".into(), "api://a".into()],
            ..good
        };
        assert_eq!(recheck(&one_of_several, &validation, 700), Ok(()));
    }

    #[test]
    fn registered_claims_are_read_only_in_the_forms_a_recheck_understands() {
        let read = |json: &str| {
            serde_json::from_str::<Claims>(json)
                .expect("claims parse whatever the registered claims hold")
                .registered()
        };
        assert_eq!(
            read(r#"{"iss":"i","aud":["a","b"],"exp":9,"nbf":3}"#),
            Some(Registered {
                iss: vec!["i".into()],
                aud: vec!["a".into(), "b".into()],
                exp: 9,
                nbf: Some(3),
            })
        );
        assert_eq!(
            read(r#"{"iss":"i","aud":"a","exp":9}"#).map(|r| r.nbf),
            Some(None)
        );
        for odd in [
            r#"{"iss":"i","aud":"a","exp":9.5}"#,
            r#"{"iss":"i","aud":"a","exp":9,"nbf":"soon"}"#,
            r#"{"iss":7,"aud":"a","exp":9}"#,
            r#"{"iss":"i","exp":9}"#,
            r#"{"iss":"i","aud":"a"}"#,
        ] {
            assert_eq!(read(odd), None, "{odd}");
        }
    }
}
