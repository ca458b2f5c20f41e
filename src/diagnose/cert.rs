//! Subject, issuer and expiry of a peer's certificate, read straight from its DER encoding.
//!
//! rustls verifies the certificate but exposes none of its fields, and an X.509 crate would cost far more
//! binary than these three fields need: a certificate is a fixed sequence of DER elements (RFC 5280 §4.1), so
//! walking to `issuer`, `validity` and `subject` takes a few dozen lines. Anything unexpected gives `None`; the
//! TLS verdict never depends on this parser, only the words around it do.

/// What an operator needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject's CN and O, e.g. `CN=api.riskshield.com, O=RiskShield Ltd`.
    pub subject: String,
    /// The issuer's CN and O.
    pub issuer: String,
    /// `notAfter` as Unix seconds.
    pub not_after: i64,
}

/// Reads subject, issuer and `notAfter` from a DER certificate.
pub fn summarize(der: &[u8]) -> Option<CertSummary> {
    let (tag, certificate, _) = element(der)?;
    expect(tag, SEQUENCE)?;
    let (tag, tbs, _) = element(certificate)?;
    expect(tag, SEQUENCE)?;
    let mut rest = tbs;
    // version [0] EXPLICIT, absent in v1 certificates.
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    let (_serial, _, rest) = element(rest)?;
    let (_signature_algorithm, _, rest) = element(rest)?;
    let (tag, issuer, rest) = element(rest)?;
    expect(tag, SEQUENCE)?;
    let (tag, validity, rest) = element(rest)?;
    expect(tag, SEQUENCE)?;
    let (tag, subject, _) = element(rest)?;
    expect(tag, SEQUENCE)?;
    let (_, _, after_not_before) = element(validity)?;
    let (time_tag, not_after, _) = element(after_not_before)?;
    Some(CertSummary {
        subject: name(subject),
        issuer: name(issuer),
        not_after: time(time_tag, not_after)?,
    })
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const BMP_STRING: u8 = 0x1e;
/// id-at-commonName (2.5.4.3) and id-at-organizationName (2.5.4.10), DER-encoded.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

fn expect(tag: u8, wanted: u8) -> Option<()> {
    (tag == wanted).then_some(())
}

/// One DER element: its tag, its contents and what follows it. Single-byte tags only, which is all a
/// certificate uses up to the subject.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// The CN and O attributes of a Name (a SEQUENCE of SETs of type-value pairs), in order of appearance.
fn name(mut rdns: &[u8]) -> String {
    let mut parts = Vec::new();
    while let Some((SET, mut set, rest)) = element(rdns) {
        rdns = rest;
        while let Some((SEQUENCE, pair, rest)) = element(set) {
            set = rest;
            let Some((OID, oid, value)) = element(pair) else {
                continue;
            };
            let label = match oid {
                COMMON_NAME => "CN",
                ORGANIZATION => "O",
                _ => continue,
            };
            if let Some((tag, value, _)) = element(value) {
                parts.push(format!("{label}={}", text(tag, value)));
            }
        }
    }
    if parts.is_empty() {
        "(no CN or O)".into()
    } else {
        parts.join(", ")
    }
}

/// A directory string as text. The certificate comes from the network and ends up on a terminal, so control
/// characters are replaced.
fn text(tag: u8, value: &[u8]) -> String {
    let decoded = if tag == BMP_STRING {
        let units: Vec<u16> = value
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(value).into_owned()
    };
    decoded
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time(tag: u8, value: &[u8]) -> Option<i64> {
    let digits = value.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        digits
            .get(range)?
            .iter()
            .try_fold(0i64, |n, d| Some(n * 10 + i64::from(d - b'0')))
    };
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = number(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (number(0..4)?, 4),
        _ => return None,
    };
    let field = |i: usize| number(rest + 2 * i..rest + 2 * i + 2);
    let (month, day, hour, minute, second) =
        (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Unix seconds as an RFC 3339 UTC time, e.g. `2026-03-01T12:00:00Z`.
pub fn rfc3339(unix: i64) -> String {
    let (days, seconds) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// The inverse of [`days_from_civil`] (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Example Issuing CA");
        ca_params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Trust");
        let ca = rcgen::CertifiedIssuer::self_signed(
            ca_params,
            rcgen::KeyPair::generate().expect("key"),
        )
        .expect("CA");
        let mut params =
            rcgen::CertificateParams::new(vec!["api.example".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "api.example");
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params
            .signed_by(&rcgen::KeyPair::generate().expect("key"), &ca)
            .expect("leaf")
            .der()
            .to_vec()
    }

    #[test]
    fn reads_subject_issuer_and_expiry() {
        // 2038-01-19 is past 2^31 seconds; 2049 is UTCTime's last year, 2050 needs GeneralizedTime.
        for ((y, m, d), unix) in [
            ((2038, 1, 19), 2_147_472_000),
            ((2049, 12, 31), 2_524_521_600),
            ((2050, 1, 1), 2_524_608_000),
        ] {
            let summary = summarize(&certificate((y, m, d))).expect("parsed");
            assert_eq!(summary.subject, "CN=api.example");
            assert_eq!(summary.issuer, "CN=Example Issuing CA, O=Example Trust");
            assert_eq!(summary.not_after, unix, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn calendar_arithmetic_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        for days in [-1, 0, 11_017, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(rfc3339(2_147_483_648), "2038-01-19T03:14:08Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn garbage_and_truncation_give_none() {
        let der = certificate((2030, 6, 1));
        assert!(summarize(&[]).is_none());
        assert!(summarize(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        for cut in [1, 10, 100, der.len() / 2] {
            assert!(summarize(&der[..cut]).is_none(), "cut at {cut}");
        }
        assert_eq!(time(UTC_TIME, b"3013320000Z"), None);
        assert_eq!(time(UTC_TIME, b"300101000000"), None);
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(text(0x0c, b"evil\x1b[2Jname"), "evil?[2Jname");
        assert_eq!(text(BMP_STRING, &[0x00, 0x41, 0x00, 0x42]), "AB");
    }
}
