//! Errors that reach a client, and the one place that turns them into a status, a code and a message.
//!
//! Handlers never choose status codes themselves: they return an [`AppError`] and [`AppError::parts`] maps it,
//! so the contract's table of codes lives in exactly one function.

use std::time::Duration;

use http::StatusCode;

use crate::validation::FieldError;

/// Why calling RiskShield did not produce a score.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// An attempt (or the whole request's deadline) ran out before RiskShield answered.
    #[error("the risk service did not answer in time")]
    Timeout,
    /// 408, 429, 5xx or a connection that could not be made or broke; worth retrying.
    #[error("the risk service is unavailable")]
    Unavailable {
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    /// A 4xx other than 401/403/408/429: our request was refused; retrying cannot help.
    #[error("the risk service rejected the request (HTTP {status})")]
    Rejected { status: u16 },
    /// A 2xx whose body is not a valid score.
    #[error("the risk service sent an invalid answer: {reason}")]
    InvalidResponse { reason: &'static str },
    /// 401/403 even after re-reading the key.
    #[error("the risk service refused our credentials (HTTP {status})")]
    Unauthorized { status: u16 },
    /// The breaker is open: RiskShield is not called.
    #[error("the risk service is failing; calls are paused")]
    CircuitOpen { retry_after: Duration },
    /// No API key yet (the vault has not been read).
    #[error("the API key for the risk service is not available yet")]
    CredentialsUnavailable,
}

impl UpstreamError {
    /// Whether another attempt may succeed (408, 429, 5xx, connection failures, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            UpstreamError::Timeout | UpstreamError::Unavailable { .. }
        )
    }

    /// Whether the call counts as one failure for the circuit breaker (it ends in 503 or 504).
    pub fn is_breaker_failure(&self) -> bool {
        self.is_retryable()
    }

    /// A short fixed label for logs and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::Timeout => "timeout",
            UpstreamError::Unavailable { status: None, .. } => "connection_error",
            UpstreamError::Unavailable { .. } => "unavailable",
            UpstreamError::Rejected { .. } => "rejected",
            UpstreamError::InvalidResponse { .. } => "invalid_response",
            UpstreamError::Unauthorized { .. } => "unauthorized",
            UpstreamError::CircuitOpen { .. } => "circuit_open",
            UpstreamError::CredentialsUnavailable => "credentials_unavailable",
        }
    }
}

/// Why a caller was not let through (AUTH_MODE=entra).
///
/// [`AuthError::Invalid`] carries a fixed reason label for logs and metrics; the answer itself never says
/// which check failed beyond RFC 6750's `invalid_token`, and never echoes the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header (none, another scheme, or an empty token).
    #[error("a bearer token is required")]
    Missing,
    /// A token was given and refused.
    #[error("the bearer token was refused")]
    Invalid { reason: &'static str },
    /// A valid token without the required app role.
    #[error("the caller lacks the required app role")]
    Forbidden,
    /// The issuer's signing keys are not known yet, so no token can be checked.
    #[error("caller authentication is not available yet")]
    Unavailable,
}

impl AuthError {
    /// A short fixed label for logs and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid { reason } => reason,
            AuthError::Forbidden => "forbidden",
            AuthError::Unavailable => "unavailable",
        }
    }
}

/// Everything a request can end in besides success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    #[error("request validation failed")]
    Validation(Vec<FieldError>),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("the request body could not be read")]
    BadRequest,
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    #[error("the request took longer than the service's deadline")]
    RequestTimeout,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// How an error is presented: status, machine-readable code, human message, optional Retry-After.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorParts {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl AppError {
    /// The single mapping from an error to its HTTP answer.
    pub fn parts(&self) -> ErrorParts {
        use UpstreamError as U;
        let (status, code, retry_after) = match self {
            AppError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", None),
            AppError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", None)
            }
            AppError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                None,
            ),
            AppError::BadRequest => (StatusCode::BAD_REQUEST, "BAD_REQUEST", None),
            AppError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND", None),
            AppError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", None)
            }
            AppError::RateLimited { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMIT_ERROR",
                Some(*retry_after),
            ),
            AppError::RequestTimeout | AppError::Upstream(U::Timeout) => {
                (StatusCode::GATEWAY_TIMEOUT, "TIMEOUT_ERROR", None)
            }
            AppError::Upstream(U::Unavailable { retry_after, .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                *retry_after,
            ),
            AppError::Upstream(U::Rejected { .. } | U::InvalidResponse { .. }) => {
                (StatusCode::BAD_GATEWAY, "UPSTREAM_ERROR", None)
            }
            AppError::Upstream(U::Unauthorized { .. }) => {
                (StatusCode::BAD_GATEWAY, "UPSTREAM_AUTH_ERROR", None)
            }
            AppError::Upstream(U::CircuitOpen { retry_after }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "CIRCUIT_OPEN",
                Some(*retry_after),
            ),
            AppError::Upstream(U::CredentialsUnavailable) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "CREDENTIALS_UNAVAILABLE",
                None,
            ),
            AppError::Auth(AuthError::Missing | AuthError::Invalid { .. }) => {
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None)
            }
            AppError::Auth(AuthError::Forbidden) => (StatusCode::FORBIDDEN, "FORBIDDEN", None),
            AppError::Auth(AuthError::Unavailable) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "AUTH_UNAVAILABLE",
                Some(AUTH_RETRY_AFTER),
            ),
        };
        ErrorParts {
            status,
            code,
            message: self.to_string(),
            retry_after,
        }
    }
}

/// Retry-After of AUTH_UNAVAILABLE: the signing keys are re-fetched within seconds of the issuer answering.
const AUTH_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The `WWW-Authenticate` value of an authentication refusal (RFC 6750, section 3): a bare challenge when no
/// token was given, `invalid_token` when one was refused, `insufficient_scope` for a missing app role.
pub fn www_authenticate(error: &AuthError) -> Option<&'static str> {
    match error {
        AuthError::Missing => Some("Bearer"),
        AuthError::Invalid { .. } => Some(r#"Bearer error="invalid_token""#),
        AuthError::Forbidden => Some(r#"Bearer error="insufficient_scope""#),
        AuthError::Unavailable => None,
    }
}

/// Seconds for a Retry-After header: rounded up, at least 1, so a client never retries immediately.
pub fn retry_after_secs(delay: Duration) -> u64 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_table() {
        let cases: Vec<(AppError, u16, &str)> = vec![
            (AppError::Validation(vec![]), 422, "VALIDATION_ERROR"),
            (
                AppError::PayloadTooLarge { limit: 1 },
                413,
                "PAYLOAD_TOO_LARGE",
            ),
            (
                AppError::UnsupportedMediaType,
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            ),
            (AppError::NotFound, 404, "NOT_FOUND"),
            (
                AppError::MethodNotAllowed { allow: "GET" },
                405,
                "METHOD_NOT_ALLOWED",
            ),
            (
                AppError::RateLimited {
                    retry_after: Duration::from_secs(1),
                },
                429,
                "RATE_LIMIT_ERROR",
            ),
            (AppError::RequestTimeout, 504, "TIMEOUT_ERROR"),
            (UpstreamError::Timeout.into(), 504, "TIMEOUT_ERROR"),
            (
                UpstreamError::Unavailable {
                    status: Some(500),
                    retry_after: None,
                }
                .into(),
                503,
                "UPSTREAM_UNAVAILABLE",
            ),
            (
                UpstreamError::Rejected { status: 400 }.into(),
                502,
                "UPSTREAM_ERROR",
            ),
            (
                UpstreamError::InvalidResponse { reason: "x" }.into(),
                502,
                "UPSTREAM_ERROR",
            ),
            (
                UpstreamError::Unauthorized { status: 401 }.into(),
                502,
                "UPSTREAM_AUTH_ERROR",
            ),
            (
                UpstreamError::CircuitOpen {
                    retry_after: Duration::from_secs(3),
                }
                .into(),
                503,
                "CIRCUIT_OPEN",
            ),
            (
                UpstreamError::CredentialsUnavailable.into(),
                503,
                "CREDENTIALS_UNAVAILABLE",
            ),
            (AuthError::Missing.into(), 401, "UNAUTHORIZED"),
            (
                AuthError::Invalid { reason: "expired" }.into(),
                401,
                "UNAUTHORIZED",
            ),
            (AuthError::Forbidden.into(), 403, "FORBIDDEN"),
            (AuthError::Unavailable.into(), 503, "AUTH_UNAVAILABLE"),
        ];
        for (error, status, code) in cases {
            let parts = error.parts();
            assert_eq!(
                (parts.status.as_u16(), parts.code),
                (status, code),
                "{error:?}"
            );
        }
    }

    #[test]
    fn only_unavailable_and_timeout_are_retried_and_trip_the_breaker() {
        assert!(UpstreamError::Timeout.is_retryable());
        assert!(
            UpstreamError::Unavailable {
                status: None,
                retry_after: None
            }
            .is_breaker_failure()
        );
        assert!(!UpstreamError::Rejected { status: 400 }.is_retryable());
        assert!(!UpstreamError::Unauthorized { status: 401 }.is_breaker_failure());
        assert!(!UpstreamError::InvalidResponse { reason: "x" }.is_retryable());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }
}
