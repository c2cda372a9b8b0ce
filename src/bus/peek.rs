//! A person's look at a member's inbox (`wait_messages` called with a kube credential): what the
//! member has not acked yet, or, when there is nothing, what comes next: a blocking `XREAD` (no
//! group) on a pooled connection while this process has a seat free, else parked for a wake-up
//! like a member's wait (see [`super::pool`], [`super::wake`]). Nothing is delivered or acked, so
//! the member's own waits still get every message.

use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::Bus;
use super::error::BusError;
use super::keys::{INBOX_GROUP, TeamKey};
use super::message::{Message, parse_entries, parse_read_reply};
use super::pool::Seat;
use super::scripts::PEEK;

/// Most entries one peek returns.
const PEEK_BATCH: usize = 100;
/// Slack over the server-side BLOCK before the client gives up on a silent connection.
const CLIENT_GRACE: Duration = Duration::from_secs(2);

/// What the peek script found.
enum Peeked {
    /// Unacked entries to show now.
    Ready(Vec<Message>),
    /// None: the id of the inbox's newest entry, after which "what comes next" starts.
    Nothing { last: String },
}

impl Bus {
    /// The messages `member` has not acked, else the next ones to arrive within `timeout` (an
    /// empty list when none did); delivers and acks nothing.
    pub async fn peek(&self, team: &TeamKey, member: &str, timeout: Duration) -> Result<Vec<Message>, BusError> {
        let deadline = Instant::now() + timeout;
        match self.blocking.seat() {
            Some(seat) => self.peek_blocking(&seat, team, member, deadline).await,
            None => self.peek_parked(team, member, deadline).await,
        }
    }

    /// With a seat: the script, then a blocking `XREAD` after the newest entry.
    async fn peek_blocking(&self, seat: &Seat<'_>, team: &TeamKey, member: &str, deadline: Instant) -> Result<Vec<Message>, BusError> {
        let last = match self.peek_ready(team, member).await? {
            Peeked::Ready(messages) => return Ok(messages),
            Peeked::Nothing { last } => last,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(Vec::new());
        }
        let mut conn = self.blocking.take(seat).await?;
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

    /// Without a seat: registered for wake-ups, the script, then parked until a wake-up, and
    /// again until something came after the newest entry at the start or the deadline passed.
    async fn peek_parked(&self, team: &TeamKey, member: &str, deadline: Instant) -> Result<Vec<Message>, BusError> {
        // The inbox's newest entry when the peek began: what comes after it is "what comes next",
        // even if the member acks it before this peek reads it.
        let mut since: Option<String> = None;
        loop {
            let watch = self.wakes.watch(team.inbox(member));
            let woken = watch.armed();
            let last = match self.peek_ready(team, member).await? {
                Peeked::Ready(messages) => return Ok(messages),
                Peeked::Nothing { last } => last,
            };
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

    /// The peek script: the team and member checks and the unacked entries, in one round trip.
    async fn peek_ready(&self, team: &TeamKey, member: &str) -> Result<Peeked, BusError> {
        let mut invocation = PEEK.prepare_invoke();
        invocation.key(team.meta()).key(team.roster()).key(team.inbox(member)).arg(INBOX_GROUP).arg(member).arg(PEEK_BATCH);
        let (outcome, entries, last): (String, Value, String) = self.run_script(&invocation).await?;
        match outcome.as_str() {
            "ready" => Ok(Peeked::Ready(parse_entries(entries)?)),
            "block" => Ok(Peeked::Nothing { last }),
            "team_not_found" => Err(BusError::TeamNotFound { team: team.to_string() }),
            "team_disbanded" => Err(BusError::TeamDisbanded { team: team.to_string() }),
            "member_not_in_team" => Err(BusError::MemberNotInTeam { team: team.to_string(), member: member.to_owned() }),
            other => Err(BusError::Protocol(format!("peek script replied {other:?}"))),
        }
    }
}
