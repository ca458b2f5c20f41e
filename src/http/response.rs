//! Building answers: JSON bodies, static bytes, and the contract's error shape (with Retry-After, Allow and
//! WWW-Authenticate where they apply).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;
use serde_json::json;

use super::state::Body;
use crate::error::{AppError, retry_after_secs, www_authenticate};

/// A JSON answer.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = bytes_response("application/json", Bytes::from(bytes));
    *response.status_mut() = status;
    response
}

pub fn bytes_response(content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The error shape of the contract, with Retry-After, Allow and WWW-Authenticate where they apply.
pub fn error_response(error: &AppError, correlation_id: &HeaderValue) -> Response<Body> {
    let parts = error.parts();
    let mut body = json!({
        "error": parts.code,
        "message": parts.message,
        "correlationId": correlation_id.to_str().unwrap_or_default(),
    });
    if let AppError::Validation(details) = error {
        body["details"] = json!(details);
    }
    let mut response = json_response(parts.status, &body);
    let headers = response.headers_mut();
    if let Some(after) = parts.retry_after {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(after)),
        );
    }
    if let AppError::MethodNotAllowed { allow } = error {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(challenge) = match error {
        AppError::Auth(auth) => www_authenticate(auth),
        _ => None,
    } {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}
