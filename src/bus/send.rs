//! Sending: messages between members and notices from the operator, both through one Lua script
//! that checks the team and roster and appends to the inboxes atomically.

use std::time::Duration;

use super::Bus;
use super::error::BusError;
use super::keys::TeamKey;
use super::message::{Delivered, MessageKind, OutgoingMessage, Recipient};
use super::scripts::SEND;

/// Sender name of operator notices.
pub const OPERATOR_SENDER: &str = "team-operator";
/// Prefix of a person's sender name (`user:alice`); no member name has a `:`.
pub const PERSON_SENDER_PREFIX: &str = "user:";

/// How long a message id is remembered for deduplication. Retries come within seconds; an hour
/// leaves room for a gateway that retries across a Redis failover.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(60 * 60);

/// The routing of one append to the inboxes.
struct Draft<'a> {
    from: &'a str,
    /// `None` broadcasts.
    to: Option<&'a str>,
    kind: MessageKind,
    /// An operator notice: allowed on a disbanded team, no sender check.
    notice: bool,
}

impl Bus {
    /// Sends a message to one member or broadcasts it to every member that has not finished,
    /// except the sender. Returns one [`Delivered`] per inbox written (a broadcast to a team of
    /// one returns none). A retry with the same `id` returns the first result and writes nothing.
    pub async fn send(&self, team: &TeamKey, msg: OutgoingMessage) -> Result<Vec<Delivered>, BusError> {
        let to = match msg.to {
            Recipient::Member(name) if name.is_empty() => {
                return Err(BusError::InvalidArgument("recipient name is empty".into()));
            }
            Recipient::Member(name) => Some(name),
            Recipient::Broadcast => None,
        };
        let draft = Draft { from: &msg.from, to: to.as_deref(), kind: msg.kind, notice: false };
        self.append(team, draft, msg.body, msg.id).await
    }

    /// Writes an operator notice (`[AGENT FAILURE] @<name> …`, a disband notice) to a queued or
    /// active member. Still allowed after [`Bus::mark_disbanded`], so waiting members learn why
    /// the team went away. A retried notice with the same `idempotency_key` is written once.
    pub async fn system_notice(&self, team: &TeamKey, to: &str, body: String, idempotency_key: String) -> Result<(), BusError> {
        if to.is_empty() {
            return Err(BusError::InvalidArgument("recipient name is empty".into()));
        }
        let draft = Draft { from: OPERATOR_SENDER, to: Some(to), kind: MessageKind::System, notice: true };
        self.append(team, draft, body, Some(idempotency_key)).await.map(drop)
    }

    async fn append(&self, team: &TeamKey, draft: Draft<'_>, body: String, id: Option<String>) -> Result<Vec<Delivered>, BusError> {
        let Draft { from, to, kind, notice } = draft;
        if body.trim().is_empty() {
            return Err(BusError::EmptyBody);
        }
        let max = self.cfg.max_body_bytes;
        if body.len() > max {
            return Err(BusError::TooLarge { size: body.len(), max });
        }
        // The id is fixed before the first attempt, so the retries below are deduplicated too.
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut invocation = SEND.prepare_invoke();
        invocation
            .key(team.meta())
            .key(team.roster())
            .key(team.sent())
            .key(team.sent_at())
            .arg(team.inbox_prefix())
            .arg(from)
            .arg(to.unwrap_or(""))
            .arg(kind.as_str())
            .arg(body)
            .arg(&id)
            .arg(self.cfg.stream_maxlen)
            .arg(IDEMPOTENCY_TTL.as_millis() as u64)
            .arg(if notice {
                "1"
            } else if from.starts_with(PERSON_SENDER_PREFIX) {
                "2"
            } else {
                "0"
            });
        let (outcome, detail): (String, String) = self.run_script(&invocation).await?;
        let team_name = || team.to_string();
        match outcome.as_str() {
            "ok" | "dup" => {
                let copies: Vec<(String, String)> =
                    serde_json::from_str(&detail).map_err(|e| BusError::Protocol(format!("send reply {detail:?}: {e}")))?;
                Ok(copies.into_iter().map(|(to, stream_id)| Delivered { to, id: id.clone(), stream_id }).collect())
            }
            "team_not_found" => Err(BusError::TeamNotFound { team: team_name() }),
            "team_disbanded" => Err(BusError::TeamDisbanded { team: team_name() }),
            "sender_not_in_team" => Err(BusError::SenderNotInTeam { team: team_name(), member: detail }),
            "unknown_recipient" => Err(BusError::UnknownRecipient { team: team_name(), member: detail }),
            "recipient_finished" => Err(BusError::RecipientFinished { team: team_name(), member: detail }),
            other => Err(BusError::Protocol(format!("send replied {other:?}"))),
        }
    }
}
