//! Reading RiskShield's answer: a status and a bounded body become a score or a typed error, per the
//! contract's table.

use std::time::SystemTime;

use http::StatusCode;
use serde::Deserialize;

use super::retry::parse_retry_after;
use crate::domain::{RiskLevel, Score};
use crate::error::UpstreamError;

/// Answers larger than this are not a score.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The answer RiskShield documents; other fields are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScoreBody {
    risk_score: u8,
    risk_level: RiskLevel,
}

/// Turns an answer into a score or an error per the contract's table: its status, its Retry-After header
/// and its body (`None` when it was too large or could not be read).
pub fn classify(
    status: StatusCode,
    retry_after: Option<&str>,
    body: Option<&[u8]>,
) -> Result<Score, UpstreamError> {
    let code = status.as_u16();
    match code {
        200..=299 => {
            let body = body.ok_or(UpstreamError::InvalidResponse {
                reason: "body too large or unreadable",
            })?;
            let not_a_score = UpstreamError::InvalidResponse {
                reason: "body is not a valid score",
            };
            // serde would also accept a JSON array for a struct; the vendor's answer is an object.
            if body.trim_ascii_start().first() != Some(&b'{') {
                return Err(not_a_score);
            }
            // Checked as UTF-8 once and read as text: from bytes, serde_json checks each string on its own.
            let parsed: ScoreBody = std::str::from_utf8(body)
                .ok()
                .and_then(|text| serde_json::from_str(text).ok())
                .ok_or(not_a_score)?;
            if parsed.risk_score > 100 {
                return Err(UpstreamError::InvalidResponse {
                    reason: "riskScore out of range",
                });
            }
            Ok(Score {
                risk_score: parsed.risk_score,
                risk_level: parsed.risk_level,
            })
        }
        401 | 403 => Err(UpstreamError::Unauthorized { status: code }),
        408 | 429 | 500..=599 => Err(UpstreamError::Unavailable {
            status: Some(code),
            retry_after: retry_after.and_then(|v| parse_retry_after(v, SystemTime::now())),
        }),
        _ => Err(UpstreamError::Rejected { status: code }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_body(s: &str) -> Option<&[u8]> {
        Some(s.as_bytes())
    }

    #[test]
    fn valid_answers() {
        let h = None;
        let score = classify(
            StatusCode::OK,
            h,
            ok_body(r#"{"riskScore":42,"riskLevel":"MEDIUM","x":1}"#),
        );
        assert_eq!(
            score,
            Ok(Score {
                risk_score: 42,
                risk_level: RiskLevel::Medium
            })
        );
        assert!(
            classify(
                StatusCode::CREATED,
                h,
                ok_body(r#"{"riskScore":0,"riskLevel":"LOW"}"#)
            )
            .is_ok()
        );
    }

    #[test]
    fn invalid_answers() {
        let h = None;
        for body in [
            "garbage",
            r#"{"riskScore":150,"riskLevel":"HIGH"}"#,
            r#"{"riskScore":-1,"riskLevel":"HIGH"}"#,
            r#"{"riskScore":50.0,"riskLevel":"HIGH"}"#,
            r#"{"riskScore":"50","riskLevel":"HIGH"}"#,
            r#"{"riskScore":50,"riskLevel":"high"}"#,
            r#"{"riskScore":50,"riskLevel":"SEVERE"}"#,
            r#"{"riskScore":50}"#,
            r#"[50,"HIGH"]"#,
        ] {
            assert!(
                matches!(
                    classify(StatusCode::OK, h, ok_body(body)),
                    Err(UpstreamError::InvalidResponse { .. })
                ),
                "{body}"
            );
        }
        // Bytes that are not UTF-8, in a value the service reads or in one it ignores.
        for body in [
            &b"{\"riskScore\":50,\"riskLevel\":\"HIGH\xff\"}"[..],
            b"{\"riskScore\":50,\"riskLevel\":\"HIGH\",\"x\":\"\xc3\"}",
        ] {
            assert!(matches!(
                classify(StatusCode::OK, h, Some(body)),
                Err(UpstreamError::InvalidResponse { .. })
            ));
        }
    }

    #[test]
    fn statuses() {
        let h = None;
        let st = |c: u16| classify(StatusCode::from_u16(c).expect("status"), h, ok_body(""));
        assert_eq!(st(400), Err(UpstreamError::Rejected { status: 400 }));
        assert_eq!(st(404), Err(UpstreamError::Rejected { status: 404 }));
        assert_eq!(st(422), Err(UpstreamError::Rejected { status: 422 }));
        assert_eq!(st(302), Err(UpstreamError::Rejected { status: 302 }));
        assert_eq!(st(401), Err(UpstreamError::Unauthorized { status: 401 }));
        assert_eq!(st(403), Err(UpstreamError::Unauthorized { status: 403 }));
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(
                st(code),
                Err(UpstreamError::Unavailable {
                    status: Some(code),
                    retry_after: None
                })
            );
        }
    }

    /// The contract's range is 0..=100: both ends are scores, one past the top is not.
    #[test]
    fn a_score_of_exactly_100_is_accepted_and_101_is_not() {
        assert_eq!(
            classify(
                StatusCode::OK,
                None,
                ok_body(r#"{"riskScore":100,"riskLevel":"CRITICAL"}"#)
            ),
            Ok(Score {
                risk_score: 100,
                risk_level: RiskLevel::Critical
            })
        );
        assert_eq!(
            classify(
                StatusCode::OK,
                None,
                ok_body(r#"{"riskScore":0,"riskLevel":"LOW"}"#)
            ),
            Ok(Score {
                risk_score: 0,
                risk_level: RiskLevel::Low
            })
        );
        assert!(matches!(
            classify(
                StatusCode::OK,
                None,
                ok_body(r#"{"riskScore":101,"riskLevel":"CRITICAL"}"#)
            ),
            Err(UpstreamError::InvalidResponse { .. })
        ));
    }

    /// The README promises answers of up to 64 KiB: the bound is that, and an answer padded with ignored
    /// fields to exactly the bound is still a score.
    #[test]
    fn answers_of_up_to_the_documented_64_kib_are_scores() {
        assert_eq!(MAX_RESPONSE_BYTES, 65_536);
        let (head, tail) = (r#"{"riskScore":7,"riskLevel":"LOW","pad":""#, r#""}"#);
        let pad = " ".repeat(MAX_RESPONSE_BYTES - head.len() - tail.len());
        let body = format!("{head}{pad}{tail}");
        assert_eq!(body.len(), MAX_RESPONSE_BYTES);
        assert_eq!(
            classify(StatusCode::OK, None, Some(body.as_bytes())),
            Ok(Score {
                risk_score: 7,
                risk_level: RiskLevel::Low
            })
        );
    }
}
