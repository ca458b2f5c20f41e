//! The doors the fuzz targets (`fuzz/`, docs/fuzzing.md) use into the hand-written parsers, which are otherwise
//! `pub(crate)`. Compiled only with the `fuzzing` feature: nothing here is part of the library's interface.
//!
//! Each door is a thin call into the real code, with plain types out, so a target compares outcomes without
//! knowing the crate's error types.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::domain::Applicant;
use crate::riskshield::h1::Connection;
use crate::validation::FieldError;

pub use crate::ratelimit::client_addr;
pub use crate::telemetry::jsonline::{JsonLines, push_escaped};

/// An upstream answer as the service's reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The body, or why it could not be read.
    pub body: Result<Bytes, String>,
    /// The pool would hand the connection out for another request.
    pub reusable: bool,
}

/// One exchange on a new connection as the upstream pool makes it: `request` written, its answer read (interim
/// answers skipped); `Err` when no answer's head could be read.
pub async fn exchange<T>(io: T, request: &[u8], max_body: usize) -> Result<Answer, String>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = Connection::new(io);
    let (answer, reusable) = connection
        .send(request, max_body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Answer {
        status: answer.status.as_u16(),
        body: answer.body.map_err(|e| e.to_string()),
        // The pool hands a connection out again only if it still looks open then: nothing has arrived on it
        // since its answer, not even its end.
        reusable: reusable && connection.is_open(),
    })
}

/// A validation's outcome: the applicant's three fields, or each problem's field and code.
pub type Validated = Result<[String; 3], Vec<(&'static str, &'static str)>>;

/// Validation as the handler runs it: the direct read of a well-formed body, else the `Value` road.
pub fn validate(body: &[u8], strict: bool) -> Validated {
    plain(crate::validation::validate(body, strict))
}

/// Validation by the `Value` road alone, which every body can take.
pub fn validate_generic(body: &[u8], strict: bool) -> Validated {
    plain(crate::validation::validate_generic(body, strict))
}

fn plain(outcome: Result<Applicant, Vec<FieldError>>) -> Validated {
    outcome
        .map(|a| [a.first_name, a.last_name, a.id_number])
        .map_err(|errors| errors.iter().map(|e| (e.field, e.code)).collect())
}
