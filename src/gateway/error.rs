//! Typed refusals of the gateway: a stable code, an HTTP status and a message naming the problem,
//! rendered as `{ "error": { "code": "...", "message": "..." } }` on every surface (JSON API,
//! MCP tool results, teamctl).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::bus::BusError;

/// Why a call was refused or failed. Codes never change once published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
    /// Seconds after which a retry may succeed, sent as `Retry-After` (a `rate_limited` refusal).
    pub retry_after_seconds: Option<u64>,
}

/// The wire form of an error.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Code and message of an error on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// A quality gate in the member's pod refused the call (teamctl answers it, never the gateway:
/// see `teamctl::quality_gate`).
pub const CHECK_FAILED: &str = "check_failed";

/// Every code the gateway answers with, and its HTTP status.
pub const CODES: &[(&str, u16)] = &[
    ("invalid_argument", 400),
    ("unauthenticated", 401),
    ("forbidden", 403),
    ("not_found", 404),
    ("unknown_recipient", 404),
    ("method_not_allowed", 405),
    ("conflict", 409),
    ("recipient_finished", 409),
    ("team_disbanded", 410),
    ("too_large", 413),
    (CHECK_FAILED, 422),
    ("inbox_full", 429),
    ("rate_limited", 429),
    ("internal", 500),
    ("unavailable", 503),
];

impl ApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after_seconds: None }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("invalid_argument", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new("forbidden", message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new("unauthenticated", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new("conflict", message)
    }
    pub fn disbanded(team: &str) -> Self {
        Self::new("team_disbanded", format!("team {team} is disbanded"))
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new("unavailable", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("internal", message)
    }

    /// The HTTP status of the code.
    pub fn status(&self) -> StatusCode {
        let code = CODES.iter().find(|(c, _)| *c == self.code).map_or(500, |(_, s)| *s);
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message.clone() } }
    }

    /// The error as JSON text, for MCP tool results.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.body()).unwrap_or_default()
    }

    /// Maps a Kubernetes API error, naming `what` the call was about.
    pub fn from_kube(err: kube::Error, what: &str) -> Self {
        match err {
            kube::Error::Api(s) => {
                let msg = format!("{what}: {}", s.message);
                match s.code {
                    400 | 422 => Self::invalid(msg),
                    401 => Self::unavailable(format!("{what}: the gateway's own credentials were refused: {}", s.message)),
                    403 => Self::forbidden(msg),
                    404 => Self::not_found(msg),
                    409 => Self::conflict(msg),
                    410 => Self::conflict(msg),
                    413 => Self::new("too_large", msg),
                    429 | 500..=599 => Self::unavailable(msg),
                    _ => Self::internal(msg),
                }
            }
            other => Self::unavailable(format!("{what}: Kubernetes API unreachable: {other}")),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<BusError> for ApiError {
    fn from(err: BusError) -> Self {
        let retry_after_seconds = match &err {
            BusError::RateLimited { retry_after_ms, .. } => Some(retry_after_ms.div_ceil(1000).max(1)),
            _ => None,
        };
        ApiError { code: err.code(), message: err.to_string(), retry_after_seconds }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_status() {
        for (code, status) in CODES {
            assert_eq!(ApiError::new(code, "x").status().as_u16(), *status);
        }
        assert_eq!(ApiError::new("whatever", "x").status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn bus_codes_are_known() {
        let e: ApiError = BusError::UnknownRecipient { team: "t".into(), member: "m".into() }.into();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let e: ApiError = BusError::TooLarge { size: 2, max: 1 }.into();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let rule = crate::bus::InboxLimit::Entries { max: 3 };
        let e: ApiError = BusError::InboxFull { team: "t".into(), member: "lead".into(), rule }.into();
        assert_eq!((e.code, e.status()), ("inbox_full", StatusCode::TOO_MANY_REQUESTS));
        assert!(e.message.contains("inbox_max_entries"), "{}", e.message);
        let e: ApiError =
            BusError::RateLimited { team: "t".into(), member: "dev".into(), per_second: 1, burst: 2, retry_after_ms: 900 }.into();
        assert_eq!((e.code, e.status()), ("rate_limited", StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(e.retry_after_seconds, Some(1));
        let response = e.into_response();
        assert_eq!(response.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
    }
}
