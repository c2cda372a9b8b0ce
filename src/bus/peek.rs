//! A person's look at a member's inbox (`wait_messages` called with a kube credential): what the
//! member has not acked yet, or, when there is nothing, a blocking `XREAD` (no group) for what
//! comes next. Nothing is delivered or acked, so the member's own waits still get every message.

use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::Bus;
use super::error::BusError;
use super::keys::{INBOX_GROUP, TeamKey};
use super::message::{Message, parse_entries, parse_read_reply};
use super::scripts::PEEK;

/// Most entries one peek returns.
const PEEK_BATCH: usize = 100;
/// Slack over the server-side BLOCK before the client gives up on a silent connection.
const CLIENT_GRACE: Duration = Duration::from_secs(2);

impl Bus {
    /// The messages `member` has not acked, else the next ones to arrive within `timeout` (an
    /// empty list when none did); delivers and acks nothing.
    pub async fn peek(&self, team: &TeamKey, member: &str, timeout: Duration) -> Result<Vec<Message>, BusError> {
        let deadline = Instant::now() + timeout;
        let mut invocation = PEEK.prepare_invoke();
        invocation.key(team.meta()).key(team.roster()).key(team.inbox(member)).arg(INBOX_GROUP).arg(member).arg(PEEK_BATCH);
        let (outcome, entries, last): (String, Value, String) = self.run_script(&invocation).await?;
        match outcome.as_str() {
            "ready" => return parse_entries(entries),
            "block" => {}
            "team_not_found" => return Err(BusError::TeamNotFound { team: team.to_string() }),
            "team_disbanded" => return Err(BusError::TeamDisbanded { team: team.to_string() }),
            "member_not_in_team" => return Err(BusError::MemberNotInTeam { team: team.to_string(), member: member.to_owned() }),
            other => return Err(BusError::Protocol(format!("peek script replied {other:?}"))),
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(Vec::new());
        }
        let mut conn = self.blocking.take().await?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(PEEK_BATCH)
            .arg("BLOCK")
            .arg(remaining.as_millis().clamp(1, u64::MAX as u128) as u64)
            .arg("STREAMS")
            .arg(team.inbox(member))
            .arg(&last);
        let read = cmd.query_async::<Value>(&mut conn);
        match tokio::time::timeout(remaining + CLIENT_GRACE, read).await {
            Err(_) => Ok(Vec::new()),
            Ok(Ok(reply)) => {
                self.blocking.give_back(conn);
                parse_read_reply(reply)
            }
            Ok(Err(e)) => Err(e.into()),
        }
    }
}
