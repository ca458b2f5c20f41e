//! The URLs of the configuration: RISKSHIELD_API_URL, parsed once into the [`RiskShieldUrl`] the client takes,
//! and AUTH_ISSUER. Both must be absolute URLs with a host before their own scheme rules apply.

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Uri};

use super::parse::is_loopback_host;

/// RISKSHIELD_API_URL as the client uses it, checked once at startup: the base as configured (without a
/// trailing slash, for logs and `diagnose`), the `{base}/score` URI the pool connects to, and the request target
/// and Host header every score request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskShieldUrl {
    base: String,
    score: Uri,
    target: PathAndQuery,
    host: HeaderValue,
}

impl RiskShieldUrl {
    /// Parses an absolute http(s) URL with a host and no query string; the scheme rules (https, loopback,
    /// ALLOW_INSECURE_UPSTREAM, prod) are [`check_upstream_url`]'s.
    pub fn parse(value: &str) -> Result<Self, String> {
        let base = value.trim_end_matches('/');
        let (uri, host) = absolute_url(base)?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err("must be an http:// or https:// URL".into());
        }
        let score: Uri = format!("{base}/score")
            .parse()
            .map_err(|_| "must be a URL".to_string())?;
        let default_port = if uri.scheme() == Some(&Scheme::HTTPS) {
            443
        } else {
            80
        };
        let authority = match uri.port_u16() {
            Some(port) if port != default_port => format!("{host}:{port}"),
            _ => host,
        };
        let host = HeaderValue::from_str(&authority).map_err(|_| "host is not a valid header")?;
        let target = score
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Self {
            base: base.to_owned(),
            score,
            target,
            host,
        })
    }

    /// The base URL as configured, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.base
    }

    /// `{base}/score`: the scheme and authority the pool connects to.
    pub fn score(&self) -> &Uri {
        &self.score
    }

    /// The score request's target (`/v1/score`).
    pub fn target(&self) -> &PathAndQuery {
        &self.target
    }

    /// The Host header of every score request (the port only when it is not the scheme's default).
    pub fn host_header(&self) -> &HeaderValue {
        &self.host
    }

    /// The host to probe, without the brackets of an IPv6 literal.
    pub fn host(&self) -> &str {
        let host = self.score.host().unwrap_or_default();
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The port to probe: the URL's, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.score
            .port_u16()
            .unwrap_or(match self.score.scheme_str() {
                Some("http") => 80,
                _ => 443,
            })
    }
}

impl std::fmt::Display for RiskShieldUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

/// An absolute URL with a host and no query string, and its host: what AUTH_ISSUER and RISKSHIELD_API_URL
/// both must be before their own scheme rules.
fn absolute_url(value: &str) -> Result<(Uri, String), String> {
    let uri: Uri = value.parse().map_err(|_| "must be a URL".to_string())?;
    let host = uri
        .host()
        .ok_or("must be an absolute URL with a host")?
        .to_owned();
    if uri.query().is_some() {
        return Err("must not have a query string".into());
    }
    Ok((uri, host))
}

/// AUTH_ISSUER: https with a host; plain http only on a loopback host outside prod (a local test issuer).
pub(super) fn check_issuer(value: &str, prod: bool) -> Result<String, String> {
    let (uri, host) = absolute_url(value)?;
    let host = host.as_str();
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if prod => return Err("must be https in prod".into()),
        Some("http") if is_loopback_host(host) => {}
        Some("http") => {
            return Err("must be https (plain http is allowed only on a loopback host)".into());
        }
        _ => return Err("must be an https:// URL".into()),
    }
    Ok(value.to_owned())
}

/// RISKSHIELD_API_URL: https, or plain http on a loopback host, or elsewhere outside prod with
/// ALLOW_INSECURE_UPSTREAM.
pub(super) fn check_upstream_url(
    value: &str,
    prod: bool,
    allow_insecure: bool,
) -> Result<RiskShieldUrl, String> {
    let (uri, host) = absolute_url(value)?;
    let host = host.as_str();
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback_host(host) => {}
        Some("http") if prod => {
            return Err("plain http:// is refused in prod except on a loopback host".into());
        }
        Some("http") if !allow_insecure => {
            return Err(
                "plain http:// on a non-loopback host needs ALLOW_INSECURE_UPSTREAM=true".into(),
            );
        }
        Some("http") => {}
        _ => return Err("must be an http:// or https:// URL".into()),
    }
    RiskShieldUrl::parse(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_riskshield_url_gives_the_score_target_and_host_header() {
        let url = RiskShieldUrl::parse("https://api.riskshield.com/v1").expect("parses");
        assert_eq!(url.as_str(), "https://api.riskshield.com/v1");
        assert_eq!(url.score(), "https://api.riskshield.com/v1/score");
        assert_eq!(url.target().as_str(), "/v1/score");
        assert_eq!(url.host_header(), "api.riskshield.com");
        assert_eq!((url.host(), url.port()), ("api.riskshield.com", 443));

        let url = RiskShieldUrl::parse("http://[::1]:8081/").expect("parses");
        assert_eq!(url.as_str(), "http://[::1]:8081");
        assert_eq!(url.target().as_str(), "/score");
        assert_eq!(url.host_header(), "[::1]:8081");
        assert_eq!((url.host(), url.port()), ("::1", 8081));

        let url = RiskShieldUrl::parse("https://rs.example:443/a/b").expect("parses");
        assert_eq!(url.host_header(), "rs.example");
        assert_eq!(url.target().as_str(), "/a/b/score");

        // No port: the scheme's own, for the probe. The URL is shown as it was given, less a final slash.
        let url = RiskShieldUrl::parse("http://127.0.0.1/v1/").expect("parses");
        assert_eq!((url.host(), url.port()), ("127.0.0.1", 80));
        assert_eq!(url.to_string(), "http://127.0.0.1/v1");
    }

    /// Each refusal says what would be accepted.
    #[test]
    fn an_issuer_refused_for_its_scheme_is_told_why() {
        let why = |issuer, prod| check_issuer(issuer, prod).expect_err(issuer);
        assert!(check_issuer("http://127.0.0.1:9/t", false).is_ok());
        assert_eq!(why("http://127.0.0.1:9/t", true), "must be https in prod");
        assert_eq!(
            why("http://issuer.example/t", false),
            "must be https (plain http is allowed only on a loopback host)"
        );
        assert_eq!(
            why("ftp://issuer.example/t", false),
            "must be an https:// URL"
        );
    }

    #[test]
    fn a_riskshield_url_needs_a_scheme_a_host_and_no_query() {
        for bad in [
            "ftp://rs.example",
            "/v1",
            "https://rs.example/v1?x=1",
            "not a url",
        ] {
            assert!(RiskShieldUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
