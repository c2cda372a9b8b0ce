//! Reading an inbox: wait (consumer-group reads), ack and counts.
//!
//! Each inbox has one consumer group; the consumer is the member's name. Delivery is at least
//! once: a wait first returns what this member was given but never acked (read from id `0`),
//! and only then blocks for new entries (`>`). An entry added at any moment before the blocking
//! read is after the group's last-delivered id, so `>` returns it at once: no window is lost.

use std::time::Duration;

use redis::{Value, aio::ConnectionLike};
use tokio::time::Instant;

use super::Bus;
use super::error::BusError;
use super::keys::{INBOX_GROUP, TeamKey};
use super::message::{InboxCounts, Message, ReadEntries, parse_read_reply};
use super::scripts::{ACK, INBOX_COUNTS};

/// Most entries one wait returns; the rest come with the next wait.
const WAIT_BATCH: usize = 100;
/// Slack over the server-side BLOCK before the client gives up on a silent connection.
const CLIENT_GRACE: Duration = Duration::from_secs(2);
/// Pause before retrying a wait whose connection dropped (a Redis restart).
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// The team state a wait needs to know about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TeamState {
    Active,
    Disbanded,
}

impl Bus {
    /// Returns this member's messages: first any it received before but did not ack, else new
    /// ones, blocking up to `timeout` (an empty list means the timeout passed).
    ///
    /// On a disbanded team the inbox can still be drained (that is how the disband notice is
    /// read); once empty the wait fails with [`BusError::TeamDisbanded`], and after teardown
    /// with [`BusError::TeamNotFound`], including a wait that was blocked during the teardown.
    /// If Redis restarts during the wait, it reconnects and keeps waiting until the deadline;
    /// only if Redis stays away that long does it fail with [`BusError::Unavailable`].
    pub async fn wait(
        &self,
        team: &TeamKey,
        member: &str,
        timeout: Duration,
    ) -> Result<Vec<Message>, BusError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.wait_once(team, member, deadline).await {
                Err(BusError::Unavailable(err)) if Instant::now() + RECONNECT_PAUSE < deadline => {
                    tracing::debug!(team = %team, member, error = %err, "wait lost redis, retrying");
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
                Ok(None) => continue,
                Ok(Some(messages)) => return Ok(messages),
                Err(e) => return Err(e),
            }
        }
    }

    /// One pass of [`Bus::wait`]; `Ok(None)` asks for another pass (stale entries were cleared).
    async fn wait_once(
        &self,
        team: &TeamKey,
        member: &str,
        deadline: Instant,
    ) -> Result<Option<Vec<Message>>, BusError> {
        let state = self.team_state(team, member).await?;
        let mut conn = self.conn();
        let pending = read_group(&mut conn, team, member, "0", None).await?;
        if !pending.messages.is_empty() {
            return Ok(Some(pending.messages));
        }
        if !pending.trimmed.is_empty() {
            self.clear_trimmed(team, member, &pending).await?;
            return Ok(None);
        }
        if state == TeamState::Disbanded {
            let fresh = read_group(&mut conn, team, member, ">", None).await?;
            return match fresh.messages.is_empty() {
                true => Err(BusError::TeamDisbanded {
                    team: team.to_string(),
                }),
                false => Ok(Some(fresh.messages)),
            };
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut blocking = self.connector.blocking().await?;
        let read = read_group(&mut blocking, team, member, ">", Some(remaining));
        match tokio::time::timeout(remaining + CLIENT_GRACE, read).await {
            // The server never answered: treat like a timeout; anything it delivered stays
            // pending and comes back with the next wait.
            Err(_) => Ok(Some(Vec::new())),
            Ok(Ok(fresh)) => Ok(Some(fresh.messages)),
            Ok(Err(BusError::Redis(err))) if is_stream_gone(&err) => {
                // The inbox was deleted under the blocked read (teardown): say why.
                match self.team_state(team, member).await? {
                    TeamState::Disbanded => Err(BusError::TeamDisbanded {
                        team: team.to_string(),
                    }),
                    TeamState::Active => Err(BusError::Redis(err)),
                }
            }
            Ok(Err(e)) => Err(e),
        }
    }

    /// Acknowledges entries by their `stream_id`; returns how many were pending. Acking an
    /// entry twice is harmless.
    pub async fn ack(
        &self,
        team: &TeamKey,
        member: &str,
        ids: &[String],
    ) -> Result<usize, BusError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut invocation = ACK.prepare_invoke();
        invocation
            .key(team.meta())
            .key(team.roster())
            .key(team.inbox(member))
            .arg(INBOX_GROUP)
            .arg(member);
        for id in ids {
            invocation.arg(id);
        }
        let (outcome, acked): (String, usize) = self.run_script(&invocation).await?;
        self.check_outcome(team, member, &outcome).map(|()| acked)
    }

    /// How many entries are pending (delivered, not acked) and undelivered in a member's inbox.
    pub async fn inbox_counts(
        &self,
        team: &TeamKey,
        member: &str,
    ) -> Result<InboxCounts, BusError> {
        let mut invocation = INBOX_COUNTS.prepare_invoke();
        invocation
            .key(team.meta())
            .key(team.roster())
            .key(team.inbox(member))
            .arg(INBOX_GROUP)
            .arg(member);
        let (outcome, pending, undelivered): (String, u64, u64) =
            self.run_script(&invocation).await?;
        self.check_outcome(team, member, &outcome)
            .map(|()| InboxCounts {
                pending,
                undelivered,
            })
    }

    /// Maps the status word of the ack and count scripts.
    fn check_outcome(&self, team: &TeamKey, member: &str, outcome: &str) -> Result<(), BusError> {
        match outcome {
            "ok" => Ok(()),
            "team_not_found" => Err(BusError::TeamNotFound {
                team: team.to_string(),
            }),
            "member_not_in_team" => Err(BusError::MemberNotInTeam {
                team: team.to_string(),
                member: member.to_string(),
            }),
            other => Err(BusError::Protocol(format!(
                "inbox script replied {other:?}"
            ))),
        }
    }

    /// Team state and roster membership, read together.
    async fn team_state(&self, team: &TeamKey, member: &str) -> Result<TeamState, BusError> {
        let (state, membership): (Option<String>, Option<String>) = redis::pipe()
            .hget(team.meta(), "state")
            .hget(team.roster(), member)
            .query_async(&mut self.conn())
            .await?;
        let state = match state.as_deref() {
            None => {
                return Err(BusError::TeamNotFound {
                    team: team.to_string(),
                });
            }
            Some("disbanded") => TeamState::Disbanded,
            Some(_) => TeamState::Active,
        };
        match membership {
            Some(_) => Ok(state),
            None => Err(BusError::MemberNotInTeam {
                team: team.to_string(),
                member: member.to_string(),
            }),
        }
    }

    /// Acks pending entries whose content was trimmed away by `MAXLEN`: they can never be
    /// delivered, and left pending they would be offered on every wait.
    async fn clear_trimmed(
        &self,
        team: &TeamKey,
        member: &str,
        read: &ReadEntries,
    ) -> Result<(), BusError> {
        tracing::warn!(team = %team, member, count = read.trimmed.len(), "pending messages were trimmed before delivery");
        self.ack(team, member, &read.trimmed).await.map(drop)
    }
}

/// One `XREADGROUP` on a member's inbox from `id` (`0`: own pending, `>`: new), blocking up to
/// `block` when given.
async fn read_group(
    conn: &mut impl ConnectionLike,
    team: &TeamKey,
    member: &str,
    id: &str,
    block: Option<Duration>,
) -> Result<ReadEntries, BusError> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(INBOX_GROUP)
        .arg(member)
        .arg("COUNT")
        .arg(WAIT_BATCH);
    if let Some(block) = block {
        // BLOCK 0 would mean forever; a zero timeout is a poll.
        cmd.arg("BLOCK")
            .arg(block.as_millis().clamp(1, u64::MAX as u128) as u64);
    }
    cmd.arg("STREAMS").arg(team.inbox(member)).arg(id);
    let reply: Value = cmd.query_async(conn).await?;
    parse_read_reply(reply)
}

/// Redis 7 unblocks a blocked XREADGROUP with `UNBLOCKED` when its stream is deleted, and a read
/// of a missing stream or group fails with `NOGROUP`.
fn is_stream_gone(err: &redis::RedisError) -> bool {
    matches!(err.code(), Some("UNBLOCKED" | "NOGROUP"))
}
