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
    pub code: ErrorCode,
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

/// The error codes, each written once with its string on the wire and its HTTP status: the
/// enum, [`ErrorCode::ALL`], [`ErrorCode::as_str`] and [`ErrorCode::http_status`] come from this
/// one list.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $wire:literal, $status:literal;)*) => {
        /// Every code the gateway answers with.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of their HTTP status.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code on the wire (`invalid_argument`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                }
            }

            /// The HTTP status it is answered with.
            pub const fn http_status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }
        }
    };
}

error_codes! {
    /// A malformed or contradictory argument.
    InvalidArgument = "invalid_argument", 400;
    /// No credential, or one that does not prove who calls.
    Unauthenticated = "unauthenticated", 401;
    /// RBAC, or a member acting outside its own team or role.
    Forbidden = "forbidden", 403;
    /// No such team, member, task or tool.
    NotFound = "not_found", 404;
    /// A message to a name not on the team's roster.
    UnknownRecipient = "unknown_recipient", 404;
    MethodNotAllowed = "method_not_allowed", 405;
    /// A concurrent change, or a name not assigned yet.
    Conflict = "conflict", 409;
    /// A message to a member that has finished.
    RecipientFinished = "recipient_finished", 409;
    TeamDisbanded = "team_disbanded", 410;
    TooLarge = "too_large", 413;
    /// A quality gate in the member's pod refused the call (teamctl answers it, never the gateway:
    /// see `teamctl::quality_gate`).
    CheckFailed = "check_failed", 422;
    /// An inbox or the team is at its limit.
    InboxFull = "inbox_full", 429;
    /// The sender is over its rate (with `Retry-After`).
    RateLimited = "rate_limited", 429;
    Internal = "internal", 500;
    /// Redis or the Kubernetes API is unreachable: retry.
    Unavailable = "unavailable", 503;
}

impl std::str::FromStr for ErrorCode {
    type Err = String;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code).ok_or_else(|| format!("unknown error code {code:?}"))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after_seconds: None }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn disbanded(team: &str) -> Self {
        Self::new(ErrorCode::TeamDisbanded, format!("team {team} is disbanded"))
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The HTTP status of the code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code.as_str().to_owned(), message: self.message.clone() } }
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
                    413 => Self::new(ErrorCode::TooLarge, msg),
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
        // Every bus code is one of the gateway's (a test below holds them to it).
        let code = err.code().parse().unwrap_or(ErrorCode::Internal);
        ApiError { code, message: err.to_string(), retry_after_seconds }
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
    fn every_code_has_a_status_and_reads_back_from_the_wire() {
        for code in ErrorCode::ALL {
            assert!(StatusCode::from_u16(code.http_status()).is_ok(), "{code}");
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(*code));
            assert_eq!(ApiError::new(*code, "x").body().error.code, code.as_str());
        }
        assert!("whatever".parse::<ErrorCode>().is_err());
        let statuses: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.http_status()).collect();
        assert!(statuses.is_sorted(), "listed in the order of their status: {statuses:?}");
    }

    #[test]
    fn every_bus_code_is_a_gateway_code() {
        let samples = [
            BusError::TeamNotFound { team: "t".into() },
            BusError::TeamDisbanded { team: "t".into() },
            BusError::SenderNotInTeam { team: "t".into(), member: "m".into() },
            BusError::UnknownRecipient { team: "t".into(), member: "m".into() },
            BusError::RecipientFinished { team: "t".into(), member: "m".into() },
            BusError::EmptyBody,
            BusError::TooLarge { size: 2, max: 1 },
            BusError::OutOfMemory("oom".into()),
            BusError::Protocol("p".into()),
        ];
        for e in samples {
            assert!(e.code().parse::<ErrorCode>().is_ok(), "{:?} has code {} the gateway does not know", e, e.code());
        }
    }

    #[test]
    fn bus_codes_are_known() {
        let e: ApiError = BusError::UnknownRecipient { team: "t".into(), member: "m".into() }.into();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let e: ApiError = BusError::TooLarge { size: 2, max: 1 }.into();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let rule = crate::bus::InboxLimit::Entries { max: 3 };
        let e: ApiError = BusError::InboxFull { team: "t".into(), member: "lead".into(), rule }.into();
        assert_eq!((e.code, e.status()), (ErrorCode::InboxFull, StatusCode::TOO_MANY_REQUESTS));
        assert!(e.message.contains("inbox_max_entries"), "{}", e.message);
        let e: ApiError =
            BusError::RateLimited { team: "t".into(), member: "dev".into(), per_second: 1, burst: 2, retry_after_ms: 900 }.into();
        assert_eq!((e.code, e.status()), (ErrorCode::RateLimited, StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(e.retry_after_seconds, Some(1));
        let response = e.into_response();
        assert_eq!(response.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
    }
}
