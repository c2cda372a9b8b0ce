//! Typed refusals and failures of the bus, each with a stable code.
//!
//! The gateway turns [`BusError::code`] into its HTTP/MCP error code and the controller uses it as
//! a metric label and Event reason, so codes never change once published.

/// Why a bus call was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The team has no state in Redis: never synced, or already torn down.
    #[error("team {team} not found")]
    TeamNotFound { team: String },
    /// The team was disbanded; only system notices and draining the inbox are still allowed.
    #[error("team {team} is disbanded")]
    TeamDisbanded { team: String },
    /// `from` of a send is not on the team's roster.
    #[error("sender {member} is not a member of team {team}")]
    SenderNotInTeam { team: String, member: String },
    /// A wait, ack or count for a member that is not on the team's roster.
    #[error("{member} is not a member of team {team}")]
    MemberNotInTeam { team: String, member: String },
    /// The recipient is not on the team's roster: refused rather than silently dropped.
    #[error("recipient {member} is not a member of team {team}")]
    UnknownRecipient { team: String, member: String },
    /// The recipient has completed, failed or been cancelled, so nobody would ever read it.
    #[error("recipient {member} of team {team} has finished")]
    RecipientFinished { team: String, member: String },
    /// The message body is empty or only whitespace.
    #[error("message body is empty")]
    EmptyBody,
    /// The message body is over the configured cap.
    #[error("message body is {size} bytes, over the cap of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// An inbox or the team is at one of its limits (see [`super::BusLimits`]); nothing was
    /// written. Retry once the recipient has read (acked) some of its messages.
    #[error("inbox of {member} in team {team} is full: {rule}")]
    InboxFull { team: String, member: String, rule: InboxLimit },
    /// The sender used up its rate (see [`super::BusLimits`]); nothing was written.
    #[error("sender {member} of team {team} is over its rate of {per_second} sends a second (burst {burst}); retry in {retry_after_ms} ms")]
    RateLimited { team: String, member: String, per_second: u32, burst: u32, retry_after_ms: u64 },
    /// Redis refused a write because it is at its `maxmemory` (with `noeviction`, nothing stored
    /// is evicted); the per-team budgets are meant to keep it from getting there.
    #[error("redis is out of memory: {0}")]
    OutOfMemory(String),
    /// An argument Redis or the bus cannot accept (a malformed stream id, an empty name).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Redis could not be reached or dropped the connection; the call may be retried.
    #[error("redis unavailable: {0}")]
    Unavailable(redis::RedisError),
    /// Any other Redis error.
    #[error("redis error: {0}")]
    Redis(#[source] redis::RedisError),
    /// Redis answered with something this module did not write (a foreign key, a version skew).
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
}

/// Which limit a send ran into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboxLimit {
    /// The inbox holds `max` entries (`inbox_max_entries`; for a notice, plus the reserve).
    Entries { max: u64 },
    /// The inbox would hold more than `max` bytes (`inbox_max_bytes`).
    Bytes { max: u64 },
    /// The team's inboxes would hold more than `max` bytes together (`team_max_bytes`).
    TeamBytes { max: u64 },
}

impl std::fmt::Display for InboxLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InboxLimit::Entries { max } => write!(f, "it holds {max} unacknowledged messages (inbox_max_entries)"),
            InboxLimit::Bytes { max } => write!(f, "it would hold more than {max} bytes (inbox_max_bytes)"),
            InboxLimit::TeamBytes { max } => write!(f, "the team's inboxes would hold more than {max} bytes (team_max_bytes)"),
        }
    }
}

impl From<redis::RedisError> for BusError {
    /// Connection-level failures become [`BusError::Unavailable`] so callers can tell "retry later"
    /// from a bug.
    fn from(err: redis::RedisError) -> Self {
        if is_transient(&err) {
            BusError::Unavailable(err)
        } else if err.code() == Some("OOM") {
            BusError::OutOfMemory(err.to_string())
        } else if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
            && err.detail().is_some_and(|d| d.contains("Invalid stream ID"))
        {
            BusError::InvalidArgument(err.to_string())
        } else {
            BusError::Redis(err)
        }
    }
}

/// Whether an error means "the connection or server is not there right now".
fn is_transient(err: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || matches!(
            err.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown | ServerErrorKind::MasterDown
            ) | ErrorKind::ClusterConnectionNotFound
        )
}

impl BusError {
    /// A stable, machine-readable code (gateway error code, metric label, Event reason).
    pub fn code(&self) -> &'static str {
        match self {
            BusError::TeamNotFound { .. } => "not_found",
            BusError::TeamDisbanded { .. } => "team_disbanded",
            BusError::SenderNotInTeam { .. } | BusError::MemberNotInTeam { .. } => "forbidden",
            BusError::UnknownRecipient { .. } => "unknown_recipient",
            BusError::RecipientFinished { .. } => "recipient_finished",
            BusError::EmptyBody | BusError::InvalidArgument(_) => "invalid_argument",
            BusError::TooLarge { .. } => "too_large",
            BusError::InboxFull { .. } | BusError::OutOfMemory(_) => "inbox_full",
            BusError::RateLimited { .. } => "rate_limited",
            BusError::Unavailable(_) => "unavailable",
            BusError::Redis(_) | BusError::Protocol(_) => "internal",
        }
    }
}
