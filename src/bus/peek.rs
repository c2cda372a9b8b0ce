//! A person's look at a member's inbox (`wait_messages` called with a kube credential): what the
//! member has not acked yet, or, when there is nothing, what comes next (parked for a wake-up
//! like a member's wait, see [`super::wake`]). Nothing is delivered or acked, so the member's own
//! waits still get every message.

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

impl Bus {
    /// The messages `member` has not acked, else the next ones to arrive within `timeout` (an
    /// empty list when none did); delivers and acks nothing.
    pub async fn peek(&self, team: &TeamKey, member: &str, timeout: Duration) -> Result<Vec<Message>, BusError> {
        let deadline = Instant::now() + timeout;
        // The inbox's newest entry when the peek began: what comes after it is "what comes next",
        // even if the member acks it before this peek reads it.
        let mut since: Option<String> = None;
        loop {
            let watch = self.wakes.watch(team.inbox(member));
            let woken = watch.armed();
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
            let since = since.get_or_insert(last.clone());
            if *since != last {
                // Entries came and the member acked them already: show them anyway.
                let reply: Value = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(PEEK_BATCH)
                    .arg("STREAMS")
                    .arg(team.inbox(member))
                    .arg(&*since)
                    .query_async(&mut self.conn())
                    .await?;
                let messages = parse_read_reply(reply)?;
                if !messages.is_empty() {
                    return Ok(messages);
                }
            }
            let _parked = self.wakes.park();
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}
