//! Reading an inbox: wait (consumer-group reads), ack and counts.
//!
//! Each inbox has one consumer group; the consumer is the member's name. Delivery is at least
//! once: a wait first returns what this member was given but never acked (read from id `0`), else
//! what is new (`>`), both read by one script that also checks the team and the member. Only when
//! there is nothing does the wait block, one of two ways (see [`super::pool`]):
//!
//! - while this process has a seat free (its first [`super::POOLED_WAITS`] concurrent waits), it
//!   blocks for new entries (`>`) on a pooled connection of its own. An entry added at any moment
//!   before the blocking read is after the group's last-delivered id, so `>` returns it at once;
//! - past them it parks in this process until a wake-up names its inbox (a send to it, or its
//!   teardown; see [`super::wake`]) and then reads again. It registers for wake-ups before the
//!   read, so an entry added at any moment after the read wakes it.
//!
//! Either way no window is lost.

use std::time::Duration;

use redis::{Script, ScriptInvocation, Value};
use tokio::time::Instant;

use super::Bus;
use super::conn::Conn;
use super::error::BusError;
use super::keys::{INBOX_GROUP, TeamKey};
use super::message::{InboxCounts, Message, parse_entries, parse_read_reply};
use super::pool::Seat;
use super::scripts::{ACK, INBOX_COUNTS, LAST_DELIVERED, WAIT_READY};

/// Most entries one wait returns; the rest come with the next wait.
const WAIT_BATCH: usize = 100;
/// Slack over the server-side BLOCK before the client gives up on a silent connection.
const CLIENT_GRACE: Duration = Duration::from_secs(2);
/// Pause before retrying a wait whose connection dropped (a Redis restart).
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// What one pass of a wait did: how many acks it applied, and the messages (None: pass again).
struct Pass {
    acked: usize,
    messages: Option<Vec<Message>>,
}

/// What the wait script found before any blocking.
enum Ready {
    /// Entries to return: pending ones, else new ones.
    Messages(Vec<Message>),
    /// A whole batch of pending entries had been trimmed (now acked); more may be pending.
    Again,
    /// Nothing yet: block (or park) until something comes.
    Block,
}

impl Ready {
    /// The pass this answer ends, or None when the wait has to block.
    fn pass(self, acked: usize) -> Option<Pass> {
        match self {
            Ready::Messages(messages) => Some(Pass { acked, messages: Some(messages) }),
            Ready::Again => Some(Pass { acked, messages: None }),
            Ready::Block => None,
        }
    }
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
    pub async fn wait(&self, team: &TeamKey, member: &str, timeout: Duration) -> Result<Vec<Message>, BusError> {
        Ok(self.ack_and_wait(team, member, &[], timeout).await?.1)
    }

    /// [`Bus::ack`] then [`Bus::wait`] in the round trip the wait makes anyway: an agent's loop
    /// hands back what it handled and asks for more in one call. Returns how many of `ack` were
    /// pending, and the messages.
    pub async fn ack_and_wait(
        &self,
        team: &TeamKey,
        member: &str,
        ack: &[String],
        timeout: Duration,
    ) -> Result<(usize, Vec<Message>), BusError> {
        let deadline = Instant::now() + timeout;
        // Acked by the first pass that reached Redis; later passes hand back nothing.
        let (mut ack, mut acked) = (ack, 0);
        loop {
            match self.wait_once(team, member, ack, deadline).await {
                Err(BusError::Unavailable(err)) if Instant::now() + RECONNECT_PAUSE < deadline => {
                    tracing::debug!(team = %team, member, error = %err, "wait lost redis, retrying");
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
                Err(e) => return Err(e),
                Ok(pass) => {
                    acked += pass.acked;
                    ack = &[];
                    if let Some(messages) = pass.messages {
                        return Ok((acked, messages));
                    }
                }
            }
        }
    }

    /// One pass of [`Bus::ack_and_wait`]; no messages asks for another pass (after a wake-up,
    /// a teardown under a blocked read, or a batch of trimmed entries).
    async fn wait_once(&self, team: &TeamKey, member: &str, ack: &[String], deadline: Instant) -> Result<Pass, BusError> {
        match self.blocking.seat() {
            Some(seat) => self.wait_blocking(&seat, team, member, ack, deadline).await,
            None => self.wait_parked(team, member, ack, deadline).await,
        }
    }

    /// A pass with a seat: the script, then a blocking read on a pooled connection, which the
    /// send's `XADD` answers with the entry (no round trip after it).
    async fn wait_blocking(
        &self,
        seat: &Seat<'_>,
        team: &TeamKey,
        member: &str,
        ack: &[String],
        deadline: Instant,
    ) -> Result<Pass, BusError> {
        let (acked, ready) = self.wait_ready(team, member, ack).await?;
        if let Some(pass) = ready.pass(acked) {
            return Ok(pass);
        }
        let pass = |messages| Pass { acked, messages };
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Only a completed read gives the connection back. On every other way out, this future
        // being dropped included, it is dropped: the server may still hold its BLOCK.
        let mut conn = self.blocking.take(seat).await?;
        let _reading = self.blocking.reading();
        let read = read_new(&mut conn, team, member, remaining);
        let result = tokio::time::timeout(remaining + CLIENT_GRACE, read).await;
        match result {
            // The server never answered: treat like a timeout; anything it delivered stays
            // pending and comes back with the next wait.
            Err(_) => Ok(pass(Some(Vec::new()))),
            Ok(Ok(messages)) => {
                self.blocking.give_back(conn);
                Ok(pass(Some(messages)))
            }
            // The inbox was deleted under the blocked read (teardown): the next pass says why.
            Ok(Err(BusError::Redis(err))) if is_stream_gone(&err) => Ok(pass(None)),
            Ok(Err(err)) => {
                if matches!(err, BusError::Unavailable(_)) {
                    self.blocking.clear();
                }
                Err(err)
            }
        }
    }

    /// A pass without a seat: registered for wake-ups first, then the script, then parked until
    /// a wake-up (another pass reads what came) or the deadline; holds no connection.
    async fn wait_parked(&self, team: &TeamKey, member: &str, ack: &[String], deadline: Instant) -> Result<Pass, BusError> {
        let watch = self.wakes.watch(team.inbox(member));
        let woken = watch.armed();
        let (acked, ready) = self.wait_ready(team, member, ack).await?;
        if let Some(pass) = ready.pass(acked) {
            return Ok(pass);
        }
        let _parked = self.wakes.park();
        let messages = match tokio::time::timeout_at(deadline, woken).await {
            Ok(()) => None,
            Err(_) => Some(Vec::new()),
        };
        Ok(Pass { acked, messages })
    }

    /// Everything a pass reads, acks included, in one round trip (see
    /// `wait_ready.lua`); how many of `ack` were pending, and what it found. Not retried here:
    /// [`Bus::ack_and_wait`] retries until its own deadline.
    async fn wait_ready(&self, team: &TeamKey, member: &str, ack: &[String]) -> Result<(usize, Ready), BusError> {
        let mut invocation = inbox_invocation(&WAIT_READY, team, member);
        invocation.arg(WAIT_BATCH);
        for id in ack {
            invocation.arg(id);
        }
        let (outcome, trimmed, entries, acked): (String, usize, Value, usize) = invocation.invoke_async(&mut self.conn()).await?;
        if trimmed > 0 {
            tracing::warn!(team = %team, member, count = trimmed, "pending messages were trimmed before delivery");
        }
        let ready = match outcome.as_str() {
            "ready" => Ready::Messages(parse_entries(entries)?),
            "again" => Ready::Again,
            "block" => Ready::Block,
            other => return Err(refusal(team, member, other)),
        };
        Ok((acked, ready))
    }

    /// How many waits of this bus (and its clones) are blocked now: waits that found nothing to
    /// return, in their blocking read on a pooled connection or parked for a wake-up.
    pub fn blocked_waits(&self) -> usize {
        self.blocking.readers() + self.wakes.parked()
    }

    /// How many of [`Bus::blocked_waits`] are parked (past the pooled ones, holding no
    /// connection of their own).
    pub fn parked_waits(&self) -> usize {
        self.wakes.parked()
    }

    /// Acknowledges entries by their `stream_id`; returns how many were pending. Acking an
    /// entry twice is harmless.
    pub async fn ack(&self, team: &TeamKey, member: &str, ids: &[String]) -> Result<usize, BusError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut invocation = inbox_invocation(&ACK, team, member);
        for id in ids {
            invocation.arg(id);
        }
        let (outcome, acked): (String, usize) = self.run_script(&invocation).await?;
        match outcome.as_str() {
            "ok" => Ok(acked),
            other => Err(refusal(team, member, other)),
        }
    }

    /// How many entries are pending (delivered, not acked) and undelivered in a member's inbox.
    pub async fn inbox_counts(&self, team: &TeamKey, member: &str) -> Result<InboxCounts, BusError> {
        let invocation = inbox_invocation(&INBOX_COUNTS, team, member);
        let (outcome, pending, undelivered): (String, u64, u64) = self.run_script(&invocation).await?;
        match outcome.as_str() {
            "ok" => Ok(InboxCounts { pending, undelivered }),
            other => Err(refusal(team, member, other)),
        }
    }
}

impl Bus {
    /// The stream id of the last entry a wait handed to `member` ('0-0' before the first): the
    /// same from the end of one turn's batch until the next batch is delivered, so it names the
    /// pause between two turns (the `[IDLE]` notice's key).
    pub async fn last_delivered(&self, team: &TeamKey, member: &str) -> Result<String, BusError> {
        let mut invocation = LAST_DELIVERED.prepare_invoke();
        invocation.key(team.inbox(member)).arg(INBOX_GROUP);
        self.run_script(&invocation).await
    }
}

/// The keys and leading arguments every inbox script takes: the team's meta and roster (to
/// refuse a disbanded team or a finished member), the member's inbox, its group and consumer.
fn inbox_invocation<'a>(script: &'a Script, team: &TeamKey, member: &str) -> ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    invocation.key(team.meta()).key(team.roster()).key(team.inbox(member)).arg(INBOX_GROUP).arg(member);
    invocation
}

/// The error a status word of the inbox scripts stands for.
fn refusal(team: &TeamKey, member: &str, outcome: &str) -> BusError {
    match outcome {
        "team_not_found" => BusError::TeamNotFound { team: team.to_string() },
        "team_disbanded" => BusError::TeamDisbanded { team: team.to_string() },
        "member_not_in_team" => BusError::MemberNotInTeam { team: team.to_string(), member: member.to_string() },
        other => BusError::Protocol(format!("inbox script replied {other:?}")),
    }
}

/// The blocking read of a wait with a seat: new entries (`>`) for up to `block`.
async fn read_new(conn: &mut Conn, team: &TeamKey, member: &str, block: Duration) -> Result<Vec<Message>, BusError> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(INBOX_GROUP)
        .arg(member)
        .arg("COUNT")
        .arg(WAIT_BATCH)
        // BLOCK 0 would mean forever; a zero timeout is a poll.
        .arg("BLOCK")
        .arg(block.as_millis().clamp(1, u64::MAX as u128) as u64)
        .arg("STREAMS")
        .arg(team.inbox(member))
        .arg(">")
        .query_async(conn)
        .await?;
    parse_read_reply(reply)
}

/// Redis 7 unblocks a blocked XREADGROUP with `UNBLOCKED` when its stream is deleted, and a read
/// of a missing stream or group fails with `NOGROUP`.
fn is_stream_gone(err: &redis::RedisError) -> bool {
    matches!(err.code(), Some("UNBLOCKED" | "NOGROUP"))
}
