//! Parsers for single configuration values. Each returns the value or a message saying what is expected;
//! [`Reader`] attaches the variable's name and collects the messages.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderValue, Uri};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::CorsOrigins;

/// Reads settings by name and collects every problem found, so that all of them are reported at once.
pub(super) struct Reader<F> {
    lookup: F,
    pub(super) errors: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    pub(super) fn new(lookup: F) -> Self {
        Self {
            lookup,
            errors: Vec::new(),
        }
    }

    /// The trimmed value of `name`, `None` when unset or empty (an empty variable means "use the default").
    pub(super) fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The value given for `name`, parsed: for settings without a default text. `None` when none was given,
    /// or when it was refused (the problem is recorded).
    pub(super) fn given<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.raw(name)?;
        match parse(&value) {
            Ok(parsed) => Some(parsed),
            Err(why) => {
                self.errors.push(format!("{name}: {why} (got {value:?})"));
                None
            }
        }
    }

    /// The value of `name`: the one given, or else its default text from [`SETTINGS`](super::SETTINGS), read
    /// by the same parser, so a default obeys the rules a given value does. `None` only with a problem
    /// recorded: a refused value, or a setting without a default text (a mistake in the table).
    pub(super) fn get<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        if self.raw(name).is_some() {
            return self.given(name, parse);
        }
        let Some(default) = super::settings::default_text(name) else {
            self.errors.push(format!(
                "{name}: the settings table declares no default text to read"
            ));
            return None;
        };
        match parse(default) {
            Ok(parsed) => Some(parsed),
            Err(why) => {
                self.errors.push(format!(
                    "{name}: the built-in default {default:?} is refused: {why}"
                ));
                None
            }
        }
    }
}

/// A parser for whole numbers from `min` to `max`.
pub(super) fn number<T>(min: T, max: T) -> impl FnOnce(&str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    move |v| match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("must be a whole number from {min} to {max}")),
    }
}

/// Reads durations such as `250ms`, `5s`, `1m` (humantime syntax). Zero is refused: every duration here is a
/// timeout or a period, and zero would disable the thing it bounds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        Ok(d) if d > Duration::from_secs(365 * 24 * 3600) => Err("must be at most a year".into()),
        Ok(d) => Ok(d),
        Err(_) => Err("must be a duration such as 250ms, 5s or 1m".into()),
    }
}

pub(super) fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

pub(super) fn parse_level(value: &str) -> Result<tracing::Level, String> {
    match value.to_ascii_uppercase().as_str() {
        "TRACE" => Ok(tracing::Level::TRACE),
        "DEBUG" => Ok(tracing::Level::DEBUG),
        "INFO" => Ok(tracing::Level::INFO),
        "WARN" | "WARNING" => Ok(tracing::Level::WARN),
        "ERROR" => Ok(tracing::Level::ERROR),
        _ => Err("must be one of TRACE, DEBUG, INFO, WARN, ERROR".into()),
    }
}

/// Reads HOST: an IP address, or `localhost`.
pub fn parse_host(value: &str) -> Result<IpAddr, String> {
    if value.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    value
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| "must be an IP address such as 0.0.0.0, :: or 127.0.0.1".into())
}

/// Reads PORT.
pub fn parse_port(value: &str) -> Result<u16, String> {
    value
        .parse()
        .map_err(|_| "must be a port number from 0 to 65535".into())
}

pub(super) fn parse_cors(value: &str) -> Result<CorsOrigins, String> {
    let items: Vec<String> = if value.starts_with('[') {
        serde_json::from_str(value).map_err(|_| "must be a JSON list of strings".to_string())?
    } else {
        value
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if items.is_empty() || items.iter().any(|o| o == "*") {
        return Ok(CorsOrigins::Any);
    }
    let mut origins = Vec::with_capacity(items.len());
    for item in items {
        let origin = item.trim_end_matches('/');
        let valid = origin.parse::<Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some()
                && u.path() == "/"
        });
        match HeaderValue::from_str(origin) {
            Ok(v) if valid => origins.push(v),
            _ => {
                return Err(format!(
                    "{item:?} is not an origin such as https://app.example"
                ));
            }
        }
    }
    Ok(CorsOrigins::List(origins))
}

/// True when the host of a URL is loopback (localhost, 127.0.0.0/8, ::1).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn read_pem_roots(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let path = PathBuf::from(path);
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect();
    let certs = match certs {
        Ok(certs) if !certs.is_empty() => certs,
        Ok(_) => return Err(format!("{} holds no PEM certificate", path.display())),
        Err(e) => return Err(format!("{} is not valid PEM: {e}", path.display())),
    };
    // The same check the TLS client makes when it loads the roots, run here so a bad file stops the start
    // before the port is bound.
    let mut store = rustls::RootCertStore::empty();
    for (index, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| {
            format!(
                "certificate {} of {} is not usable as a trust anchor: {e}",
                index + 1,
                path.display()
            )
        })?;
    }
    Ok(certs)
}

/// Reads KEY_VAULT_URL with the same URL parser the Key Vault client uses, so what passes here is what the
/// client gets: an https URL with a host.
pub(super) fn parse_vault_url(value: &str) -> Result<String, String> {
    let url = azure_core::http::Url::parse(value).map_err(|_| {
        // URLs are read with ASCII host names only (Cargo.toml, idna_adapter): say how to write another.
        let hint = if value.is_ascii() {
            ""
        } else {
            "; write a non-ASCII host name in its xn-- (punycode) form"
        };
        format!("must be a URL such as https://my-vault.vault.azure.net/{hint}")
    })?;
    if url.scheme() != "https" || url.host_str().is_none_or(str::is_empty) {
        return Err("must be an https:// URL such as https://my-vault.vault.azure.net/".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query string or fragment".into());
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_longer_than_zero_and_at_most_a_year() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(
            parse_duration("30days"),
            Ok(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            parse_duration("365days"),
            Ok(Duration::from_secs(365 * 86_400))
        );
        for bad in ["0s", "365days 1s", "soon", ""] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_log_level_is_read_in_any_case() {
        for (given, level) in [
            ("trace", tracing::Level::TRACE),
            ("Debug", tracing::Level::DEBUG),
            ("INFO", tracing::Level::INFO),
            ("warn", tracing::Level::WARN),
            ("WARNING", tracing::Level::WARN),
            ("error", tracing::Level::ERROR),
        ] {
            assert_eq!(parse_level(given), Ok(level), "{given}");
        }
        assert!(parse_level("loud").is_err());
    }

    #[test]
    fn vault_urls() {
        assert!(parse_vault_url("https://v.vault.azure.net/").is_ok());
        assert!(parse_vault_url("https://xn--tst-jma.vault.azure.net/").is_ok());
        let unicode = parse_vault_url("https://tëst.vault.azure.net/");
        assert!(unicode.is_err_and(|e| e.contains("xn--")));
        assert!(parse_vault_url("https://localhost:8443/").is_ok());
        for bad in [
            "http://v.vault.azure.net/",
            "v.vault.azure.net",
            "https://",
            "https://v.vault.azure.net/?x=1",
            "https://exa mple/",
        ] {
            assert!(parse_vault_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_units_and_refuse_zero() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5").is_err());
    }
}
